"""PyTorch baseline for bench/gpu-train.ts (issue 6 part (d)): the Qwen3 architecture in plain torch
on CUDA, f32 master parameters under bf16 autocast, attention through
F.scaled_dot_product_attention with the NPR layout as a dense bool mask, eager (no compile).
Reads the tokens, targets, positions and visible key ranges npr used (--layout JSON), times
forward + cross-entropy + backward, prints one JSON line.

    python3 bench/torch_train_gpu.py --layout /tmp/layout.json [--iters 5] [--warm 2]
"""
import argparse, json, math, statistics, time
import torch
import torch.nn.functional as F

# The Qwen3-0.6B shape (tied embeddings), as bench/hf_parity.py's "0.6b".
CFG = dict(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
           num_attention_heads=16, num_key_value_heads=8, head_dim=128, rms_norm_eps=1e-6, rope_theta=1e6)


def rmsnorm(x, w, eps):
    # HF Qwen3RMSNorm: statistics in fp32, whatever the activation dtype.
    xf = x.float()
    return w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps))


def rope(x, cos, sin):  # x [1, H, T, D]
    D = x.shape[-1]
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    return x * cos + torch.cat([-x2, x1], -1) * sin


class Qwen3(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        V, C, I = c["vocab_size"], c["hidden_size"], c["intermediate_size"]
        H, Hk, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        P = lambda *s: torch.nn.Parameter(torch.randn(*s, device="cuda") * 0.02)
        O = lambda n: torch.nn.Parameter(torch.ones(n, device="cuda"))
        self.embed = P(V, C)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            l = torch.nn.Module()
            l.q, l.k, l.v, l.o = P(H * D, C), P(Hk * D, C), P(Hk * D, C), P(C, H * D)
            l.gate, l.up, l.down = P(I, C), P(I, C), P(C, I)
            l.qn, l.kn, l.ln1, l.ln2 = O(D), O(D), O(C), O(C)
            self.layers.append(l)
        self.norm = O(C)

    def forward(self, ids, pos, mask):  # ids [T], pos [T], mask [T, T] bool (True = may attend)
        c = self.c
        T = ids.shape[0]
        H, Hk, D, eps = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"]
        inv = 1.0 / (c["rope_theta"] ** (torch.arange(0, D, 2, device="cuda", dtype=torch.float32) / D))
        ang = pos[:, None].float() * inv[None, :]
        emb = torch.cat([ang, ang], -1)
        cos, sin = emb.cos(), emb.sin()
        h = F.embedding(ids, self.embed)  # fp32 (autocast leaves embedding alone)
        for l in self.layers:
            a = rmsnorm(h, l.ln1, eps)
            q = rmsnorm(F.linear(a, l.q).view(T, H, D), l.qn, eps).transpose(0, 1)[None]
            k = rmsnorm(F.linear(a, l.k).view(T, Hk, D), l.kn, eps).transpose(0, 1)[None]
            v = F.linear(a, l.v).view(T, Hk, D).transpose(0, 1)[None]
            q, k = rope(q, cos, sin), rope(k, cos, sin)
            k = k.repeat_interleave(H // Hk, dim=1)  # HF repeat_kv
            v = v.repeat_interleave(H // Hk, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1 / math.sqrt(D))
            h = h + F.linear(o[0].transpose(0, 1).reshape(T, H * D), l.o)
            m = rmsnorm(h, l.ln2, eps)
            h = h + F.linear(F.silu(F.linear(m, l.gate)) * F.linear(m, l.up), l.down)
        return F.linear(rmsnorm(h, self.norm, eps), self.embed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--layout", required=True)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warm", type=int, default=2)
    a = ap.parse_args()
    L = json.load(open(a.layout))
    T = len(L["ids"])
    ids = torch.tensor(L["ids"], device="cuda")
    targets = torch.tensor(L["targets"], device="cuda")
    pos = torch.tensor(L["positions"], device="cuda")
    mask = torch.zeros(T, T, dtype=torch.bool)
    for i, ranges in enumerate(L["visible"]):
        for s, e in ranges:
            mask[i, s:e] = True
    mask = mask.cuda()
    torch.manual_seed(0)
    model = Qwen3(CFG)
    times = []
    for it in range(a.warm + a.iters):
        model.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(ids, pos, mask)
        loss = F.cross_entropy(logits.float(), targets)
        loss.backward()
        torch.cuda.synchronize()
        if it >= a.warm:
            times.append(time.perf_counter() - t0)
        del logits, loss
    ms = statistics.median(times) * 1e3
    print(json.dumps({"part": "d_torch", "tokens": T, "ms": round(ms, 2), "tok_s": round(T / ms * 1e3),
                      "all_ms": [round(t * 1e3, 1) for t in times], "torch": torch.__version__,
                      "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 1)}), flush=True)


if __name__ == "__main__":
    main()
