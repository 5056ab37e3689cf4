from pixelwise.postprocess.crf import CRFConfig, crf_refine_logits, dense_crf, dense_crf_exact

__all__ = ["CRFConfig", "crf_refine_logits", "dense_crf", "dense_crf_exact"]
