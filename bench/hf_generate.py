"""Part (b) of bench/gpu.ts: Hugging Face transformers `generate` on the same checkpoint, prompt
and lengths as npr's batch-1 decode (part (a)): eager attention, bf16, greedy, batch 1, on the GPU.
Prints one JSON line {bench: "hf_generate", tokens_per_s, ...}; the first run is a warm-up.

    python3 bench/hf_generate.py --dir CKPT --prompt 32 --steps 128
"""
import argparse
import json
import time

import torch
import transformers
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", required=True, help="a checkpoint folder written by bench/hf_parity.py (has ids.json)")
    ap.add_argument("--prompt", type=int, default=32)
    ap.add_argument("--steps", type=int, default=128)
    a = ap.parse_args()
    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.bfloat16, attn_implementation="eager").cuda().eval()
    with open(f"{a.dir}/ids.json") as f:
        ids = torch.tensor([json.load(f)[: a.prompt]], device="cuda")
    kw = dict(max_new_tokens=a.steps, min_new_tokens=a.steps, do_sample=False, use_cache=True, pad_token_id=0)
    with torch.no_grad():
        model.generate(ids, **{**kw, "max_new_tokens": 8, "min_new_tokens": 8})  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model.generate(ids, **kw)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
    new = out[0, ids.shape[1]:].tolist()
    print(json.dumps({"bench": "hf_generate", "steps": len(new), "prompt": a.prompt, "s": dt, "tokens_per_s": len(new) / dt,
                      "first_tokens": new[:16], "torch": torch.__version__, "transformers": transformers.__version__}), flush=True)


if __name__ == "__main__":
    main()
