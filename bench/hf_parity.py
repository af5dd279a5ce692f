"""Reference side of the npr <-> Hugging Face parity check (bench/parity.ts is the other side).

Creates random Qwen3ForCausalLM checkpoints with transformers, stores them in bf16
(save_pretrained, safetensors), reloads them with from_pretrained and computes logits for fixed
token ids twice on the GPU: in bf16 (the checkpoint's dtype, eager attention) and in fp32 over the
same bf16 weights. Writes, per
config, under OUT/<name>/: the checkpoint, ids.json, logits_bf16.f32 and logits_fp32.f32
(raw little-endian float32 [T, V]) and meta.json (shapes, timings, versions).

    python3 bench/hf_parity.py --out /tmp/parity --configs tiny,0.6b,1.7b,4b --tokens 128 --big-layers 8

Shapes are the published Qwen3 ones; --big-layers cuts num_hidden_layers of 1.7b and 4b (0 keeps
them whole) to save time and memory, and meta.json records the layer count used.
"""
import argparse
import json
import os
import time

import torch
import transformers
from transformers import Qwen3Config, Qwen3ForCausalLM

QWEN3 = {
    "tiny": dict(vocab_size=1000, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, tie_word_embeddings=False),
    "0.6b": dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "1.7b": dict(vocab_size=151936, hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                 num_attention_heads=16, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
    "4b": dict(vocab_size=151936, hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
               num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=True),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--configs", default="tiny,0.6b")
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--big-layers", type=int, default=0, help="num_hidden_layers for 1.7b/4b (0: published)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()
    dev = torch.device("cuda")
    for name in args.configs.split(","):
        shape = dict(QWEN3[name])
        if name in ("1.7b", "4b") and args.big_layers > 0:
            shape["num_hidden_layers"] = args.big_layers
        cfg = Qwen3Config(**shape, rms_norm_eps=1e-6, rope_theta=1_000_000.0, max_position_embeddings=40960,
                          attention_bias=False, attn_implementation="eager")
        torch.manual_seed(args.seed)
        t0 = time.time()
        with torch.device(dev):
            model = Qwen3ForCausalLM(cfg)
        model = model.to(torch.bfloat16).eval()
        d = os.path.join(args.out, name)
        os.makedirs(d, exist_ok=True)
        model.save_pretrained(d, safe_serialization=True)
        t_make = time.time() - t0
        g = torch.Generator().manual_seed(args.seed + 1)
        ids = torch.randint(0, shape["vocab_size"], (args.tokens,), generator=g)
        with open(os.path.join(d, "ids.json"), "w") as f:
            json.dump(ids.tolist(), f)
        timings = {}
        inv_freq_dtype = {}
        del model
        with torch.no_grad():
            # Reload as a user would (from_pretrained with a dtype): that keeps the rotary inv_freq
            # buffer in fp32. Casting a built model with .to(bfloat16) would round inv_freq to bf16
            # too and put angle errors of up to ~1 rad at position 500 into the reference.
            for label, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
                m = Qwen3ForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager", device_map="cuda").eval()
                torch.cuda.synchronize()
                t0 = time.time()
                logits = m(ids[None].to(dev)).logits[0].float()
                torch.cuda.synchronize()
                timings[label] = time.time() - t0
                logits.cpu().numpy().astype("<f4").tofile(os.path.join(d, f"logits_{label}.f32"))
                inv_freq_dtype[label] = str(m.model.rotary_emb.inv_freq.dtype)
                del m
                torch.cuda.empty_cache()
        with open(os.path.join(d, "config.json")) as f:
            saved = json.load(f)
        meta = {
            "config_json_rope": {k: v for k, v in saved.items() if "rope" in k or "window" in k},
            "name": name, "shape": shape, "tokens": args.tokens, "seed": args.seed,
            "transformers": transformers.__version__, "torch": torch.__version__,
            "device": torch.cuda.get_device_name(0), "seconds": {"make_and_save": t_make, **timings},
            "inv_freq_dtype": inv_freq_dtype,
        }
        with open(os.path.join(d, "meta.json"), "w") as f:
            json.dump(meta, f, indent=1)
        print(json.dumps(meta), flush=True)


if __name__ == "__main__":
    main()
