"""The context-guided LFQ tokenizer (stage 1): ctx and dyn branches, discriminator, losses, forecast decoding.

    from pwm_model.tokenizer.model import Tokenizer
    tok = Tokenizer(cfg.tokenizer)
    ctx_tokens, guide_enc = tok.encode_ctx(img_ctx)
"""
