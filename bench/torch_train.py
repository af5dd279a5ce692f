"""PyTorch CPU baseline for bench/cpu-train.ts: the same Qwen3 architecture written in plain torch
(Debian's python3-torch has no transformers), trained with the same step: forward over B packed
sequences of length S with a causal mask, cross-entropy, backward, AdamW. Prints one JSON line.

Install the baseline on Debian: apt-get install python3-torch
"""
import argparse, json, math, time
import torch
import torch.nn.functional as F


def rmsnorm(x, w, eps):
    var = x.pow(2).mean(-1, keepdim=True)
    return x * torch.rsqrt(var + eps) * w


def rope(x, pos, theta):  # x [B, H, S, D]
    D = x.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, D, 2, dtype=torch.float32) / D))
    ang = pos[:, None].float() * inv[None, :]
    emb = torch.cat([ang, ang], -1)
    cos, sin = emb.cos(), emb.sin()
    x1, x2 = x[..., : D // 2], x[..., D // 2 :]
    rot = torch.cat([-x2, x1], -1)
    return x * cos + rot * sin


class Qwen3(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        V, C, I = c["vocab_size"], c["hidden_size"], c["intermediate_size"]
        H, Hk, D = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"]
        self.embed = torch.nn.Parameter(torch.randn(V, C) * 0.02)
        self.layers = torch.nn.ModuleList()
        for _ in range(c["num_hidden_layers"]):
            l = torch.nn.Module()
            l.q = torch.nn.Linear(C, H * D, bias=False)
            l.k = torch.nn.Linear(C, Hk * D, bias=False)
            l.v = torch.nn.Linear(C, Hk * D, bias=False)
            l.o = torch.nn.Linear(H * D, C, bias=False)
            l.qn = torch.nn.Parameter(torch.ones(D))
            l.kn = torch.nn.Parameter(torch.ones(D))
            l.gate = torch.nn.Linear(C, I, bias=False)
            l.up = torch.nn.Linear(C, I, bias=False)
            l.down = torch.nn.Linear(I, C, bias=False)
            l.ln1 = torch.nn.Parameter(torch.ones(C))
            l.ln2 = torch.nn.Parameter(torch.ones(C))
            self.layers.append(l)
        self.norm = torch.nn.Parameter(torch.ones(C))
        self.lm_head = None if c.get("tie_word_embeddings") else torch.nn.Parameter(torch.randn(V, C) * 0.02)

    def forward(self, ids):  # ids [B, S]
        c = self.c
        B, S = ids.shape
        H, Hk, D, eps, theta = c["num_attention_heads"], c["num_key_value_heads"], c["head_dim"], c["rms_norm_eps"], c["rope_theta"]
        pos = torch.arange(S)
        mask = torch.full((S, S), float("-inf")).triu(1)
        h = self.embed[ids]
        for l in self.layers:
            a = rmsnorm(h, l.ln1, eps)
            q = rmsnorm(l.q(a).view(B, S, H, D), l.qn, eps).transpose(1, 2)
            k = rmsnorm(l.k(a).view(B, S, Hk, D), l.kn, eps).transpose(1, 2)
            v = l.v(a).view(B, S, Hk, D).transpose(1, 2)
            q, k = rope(q, pos, theta), rope(k, pos, theta)
            k = k.repeat_interleave(H // Hk, dim=1)
            v = v.repeat_interleave(H // Hk, dim=1)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(D) + mask, -1)
            o = (att @ v).transpose(1, 2).reshape(B, S, H * D)
            h = h + l.o(o)
            m = rmsnorm(h, l.ln2, eps)
            h = h + l.down(F.silu(l.gate(m)) * l.up(m))
        h = rmsnorm(h, self.norm, eps)
        return h @ (self.embed if self.lm_head is None else self.lm_head).t()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    c = json.load(open(a.config))
    model = Qwen3(c)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    V = c["vocab_size"]
    ids = torch.randint(0, V, (a.batch, a.seq + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    times = []
    for step in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step >= a.warmup:
            times.append(time.perf_counter() - t0)
    tok = a.batch * a.seq
    best = min(times)
    med = sorted(times)[len(times) // 2]
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "params": sum(p.numel() for p in model.parameters()),
                      "tokens_per_step": tok, "median_s": med, "best_s": best, "tokens_per_s": tok / med, "loss": loss.item()}))


if __name__ == "__main__":
    main()
