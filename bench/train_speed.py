"""Training speed: portagpt's Trainer + GPT2Model (SDPA) against a plain chapter-5 loop.

The baseline is self-contained below: chapter 5's GPTModel, whose attention
builds the scores with an explicit ``q @ k.T`` matmul, fills a registered
causal-mask buffer with -inf and applies softmax (no SDPA), trained by a
``train_model_simple``-style loop. Both models get the same config (a GPT-2
preset, default ``tiny``), the *same initial weights* (the chapter-5 names
are GPT2Model's names, so one state dict fits both; the script checks that
both give the same loss first), the same data (the bundled corpus), batches
and machine, in the same process, measured alternately.

Two figures, each as tokens/s (training tokens over wall time):

* steps: forward + backward + AdamW step over the same batches, nothing else;
* loop: whole epochs as chapter 5 runs them: evaluation every 5 steps on 5
  batches per split and a 50-token greedy sample after each epoch (portagpt:
  Trainer without a run folder, so no files; its sample uses the KV cache).

    python bench/train_speed.py                       # tiny preset, context 256, batch 2
    python bench/train_speed.py --preset 124M --epochs 1 --steps 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

# ---- chapter 5's GPTModel (hand-written attention with an explicit causal mask) ----------


class Ch5MultiHeadAttention(nn.Module):
    def __init__(
        self,
        d_in: int,
        d_out: int,
        context_length: int,
        dropout: float,
        num_heads: int,
        qkv_bias: bool,
    ):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_out // num_heads
        self.W_query = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_key = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.W_value = nn.Linear(d_in, d_out, bias=qkv_bias)
        self.out_proj = nn.Linear(d_out, d_out)
        self.dropout = nn.Dropout(dropout)
        self.register_buffer(
            "mask", torch.triu(torch.ones(context_length, context_length), diagonal=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        q = (
            self.W_query(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        )  # (B, H, T, hd)
        k = self.W_key(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        v = self.W_value(x).view(b, t, self.num_heads, self.head_dim).transpose(1, 2)
        scores = q @ k.transpose(2, 3)  # (B, H, T, T)
        scores.masked_fill_(self.mask.bool()[:t, :t], -torch.inf)
        weights = self.dropout(torch.softmax(scores / self.head_dim**0.5, dim=-1))
        ctx = (weights @ v).transpose(1, 2).reshape(b, t, -1)  # (B, T, d)
        return self.out_proj(ctx)


class Ch5LayerNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.scale = nn.Parameter(torch.ones(dim))
        self.shift = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return self.scale * (x - mean) / torch.sqrt(var + self.eps) + self.shift


class Ch5GELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (
            0.5
            * x
            * (1 + torch.tanh(torch.sqrt(torch.tensor(2.0 / torch.pi)) * (x + 0.044715 * x**3)))
        )


class Ch5FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(dim, hidden), Ch5GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class Ch5TransformerBlock(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.att = Ch5MultiHeadAttention(
            cfg.emb_dim, cfg.emb_dim, cfg.context_length, cfg.drop_rate, cfg.n_heads, cfg.qkv_bias
        )
        self.ff = Ch5FeedForward(cfg.emb_dim, cfg.mlp_dim)
        self.norm1 = Ch5LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.norm2 = Ch5LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.drop_shortcut = nn.Dropout(cfg.drop_rate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_shortcut(self.att(self.norm1(x)))
        return x + self.drop_shortcut(self.ff(self.norm2(x)))


class Ch5GPTModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.emb_dim)
        self.pos_emb = nn.Embedding(cfg.context_length, cfg.emb_dim)
        self.drop_emb = nn.Dropout(cfg.drop_rate)
        self.trf_blocks = nn.Sequential(*[Ch5TransformerBlock(cfg) for _ in range(cfg.n_layers)])
        self.final_norm = Ch5LayerNorm(cfg.emb_dim, cfg.layer_norm_eps)
        self.out_head = nn.Linear(cfg.emb_dim, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:  # same parameters as the portagpt model
            self.out_head.weight = self.tok_emb.weight

    def forward(self, in_idx: torch.Tensor) -> torch.Tensor:
        t = in_idx.shape[1]
        pos = self.pos_emb(torch.arange(t, device=in_idx.device))
        x = self.drop_emb(self.tok_emb(in_idx) + pos)
        x = self.trf_blocks(x)
        return self.out_head(self.final_norm(x))


# ---- chapter 5's training loop ---------------------------------------------------------------


def ch5_loss_batch(model, x, y, device):
    logits = model(x.to(device))
    return F.cross_entropy(logits.flatten(0, 1), y.to(device).flatten())


def ch5_loss_loader(loader, model, device, num_batches):
    n = min(num_batches, len(loader))
    total = 0.0
    for i, (x, y) in enumerate(loader):
        if i >= n:
            break
        total += ch5_loss_batch(model, x, y, device).item()
    return total / n


def ch5_generate_simple(model, idx, max_new_tokens, context_size):
    for _ in range(max_new_tokens):
        with torch.no_grad():
            logits = model(idx[:, -context_size:])[:, -1]
        idx = torch.cat([idx, logits.argmax(dim=-1, keepdim=True)], dim=1)
    return idx


def ch5_train(
    model,
    train_loader,
    val_loader,
    optimizer,
    device,
    epochs,
    eval_freq,
    eval_iter,
    prompt_ids,
    ctx,
):
    tokens_seen, global_step = 0, -1
    for _ in range(epochs):
        model.train()
        for x, y in train_loader:
            optimizer.zero_grad()
            loss = ch5_loss_batch(model, x, y, device)
            loss.backward()
            optimizer.step()
            tokens_seen += x.numel()
            global_step += 1
            if global_step % eval_freq == 0:
                model.eval()
                with torch.no_grad():
                    ch5_loss_loader(train_loader, model, device, eval_iter)
                    ch5_loss_loader(val_loader, model, device, eval_iter)
                model.train()
        model.eval()
        ch5_generate_simple(model, prompt_ids.to(device), 50, ctx)
        model.train()
    return tokens_seen


# ---- measuring ---------------------------------------------------------------------------------


def step_throughput(model, batches, device, lr) -> float:
    """Tokens/s of forward + backward + AdamW step over ``batches`` (after one warm-up step)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    model.train()

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        ch5_loss_batch(model, x, y, device).backward()
        opt.step()

    step(*batches[0])
    start = time.perf_counter()
    for x, y in batches:
        step(x, y)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return sum(x.numel() for x, _ in batches) / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--context-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2, help="epochs per full-loop measurement")
    ap.add_argument("--steps", type=int, default=8, help="batches per step measurement")
    ap.add_argument("--repeats", type=int, default=2, help="alternating measurements of each")
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    from dataclasses import replace

    from portagpt.core.data import build_loaders
    from portagpt.core.train import TrainConfig, Trainer
    from portagpt.registry import get_family

    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    family = get_family("gpt2")
    cfg = replace(family.preset(args.preset), drop_rate=0.0)
    tok = family.load_tokenizer(None, cfg)
    data = build_loaders(
        tok, context_length=args.context_length, batch_size=args.batch_size, seed=123
    )
    torch.manual_seed(123)
    ours = family.build_model(cfg)
    ours.init_weights()
    ours.to(device)
    init_state = {k: v.clone() for k, v in ours.state_dict().items()}
    ch5 = Ch5GPTModel(cfg).to(device)
    missing, unexpected = ch5.load_state_dict(init_state, strict=False)
    assert not unexpected and all(k.endswith("att.mask") for k in missing), (missing, unexpected)

    batches = []
    while len(batches) < args.steps:
        batches += list(data.train_loader)
    batches = batches[: args.steps]
    x0, y0 = batches[0]
    with torch.no_grad():
        l_ours = ch5_loss_batch(ours.eval(), x0, y0, device).item()
        l_ch5 = ch5_loss_batch(ch5.eval(), x0, y0, device).item()
    n_params = sum(p.numel() for p in ours.parameters())
    print(
        f"GPT-2 {args.preset} ({n_params / 1e6:.1f}M params), context {args.context_length}, batch "
        f"{args.batch_size}, {device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"same weights, same first-batch loss: portagpt {l_ours:.5f}  chapter-5 {l_ch5:.5f}")

    step_ours, step_ch5, loop_ours, loop_ch5 = [], [], [], []
    prompt = torch.tensor([tok.encode("Every effort moves you")])
    for _ in range(args.repeats):
        for which in ("ours", "ch5"):
            model = (
                Ch5GPTModel(cfg).to(device)
                if which == "ch5"
                else family.build_model(cfg).to(device)
            )
            model.load_state_dict(init_state, strict=False)
            (step_ours if which == "ours" else step_ch5).append(
                step_throughput(model, batches, device, args.lr)
            )

            model.load_state_dict(init_state, strict=False)
            start = time.perf_counter()
            if which == "ours":
                tc = TrainConfig(
                    epochs=args.epochs, lr=args.lr, eval_freq=5, eval_iter=5, sample_tokens=50
                )
                trainer = Trainer(
                    model,
                    data.train_loader,
                    data.val_loader,
                    tc,
                    tokenizer=tok,
                    progress=False,
                    is_main_process=True,
                )
                trainer.log = lambda message: None  # quiet
                trainer.fit()
                tokens = trainer.tokens_seen
            else:
                opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.1)
                tokens = ch5_train(
                    model,
                    data.train_loader,
                    data.val_loader,
                    opt,
                    device,
                    args.epochs,
                    5,
                    5,
                    prompt,
                    args.context_length,
                )
            if device.type == "cuda":
                torch.cuda.synchronize()
            (loop_ours if which == "ours" else loop_ch5).append(
                tokens / (time.perf_counter() - start)
            )

    def row(name: str, a: list[float], b: list[float]) -> None:
        ma, mb = statistics.median(a), statistics.median(b)
        print(
            f"{name:<6} portagpt {ma:>9,.0f} tok/s   chapter-5 {mb:>9,.0f} tok/s   ratio {ma / mb:.2f}x"
        )

    print(f"medians of {args.repeats} alternating runs:")
    row("steps", step_ours, step_ch5)
    row("loop", loop_ours, loop_ch5)


if __name__ == "__main__":
    main()
