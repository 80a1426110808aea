//! The sequence layers in a PyTorch export (a child of `torch.rs`): the Python classes the
//! exported source defines for them (`SelfAttention`, `Mlp`, `TransformerBlock`,
//! `TokenEmbedding`, `Gpt`, each computing what nabla's layer computes), and each layer's module
//! expression and tensor names. `nn.Embedding` and `nn.LayerNorm` store their tensors as nabla
//! does; the projections are `nn.Linear`, whose weights the export transposes. The source needs
//! PyTorch ≥ 2.1 (`nn.LayerNorm(bias=...)`, `F.scaled_dot_product_attention`).

use crate::error::Result;
use crate::nn::LayerSpec;

/// Tensors as (nabla's name prefix, PyTorch's, whether a linear weight to transpose).
pub(super) type Names = Vec<(String, String, bool)>;

/// Python defining the modules of nabla's sequence layers (after `import torch.nn as nn`).
pub(super) const SEQUENCE_CLASSES: &str = r#"import torch
import torch.nn.functional as F


class SelfAttention(nn.Module):
    """nabla's MultiHeadAttention: one qkv projection, heads of width // heads, an output
    projection; softmax(q·kᵀ/√d)·v per head, each position seeing the earlier ones if causal.
    Training drops attention probabilities and the output with probability `dropout`."""

    def __init__(self, width, heads, causal=True, bias=True, dropout=0.0):
        super().__init__()
        self.heads, self.causal, self.dropout = heads, causal, dropout
        self.qkv = nn.Linear(width, 3 * width, bias=bias)
        self.proj = nn.Linear(width, width, bias=bias)
        self.resid_dropout = nn.Dropout(dropout)

    def forward(self, x):
        b, t, c = x.shape
        qkv = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            qkv[0], qkv[1], qkv[2], dropout_p=p, is_causal=self.causal
        )
        return self.resid_dropout(self.proj(y.transpose(1, 2).reshape(b, t, c)))


class Mlp(nn.Module):
    def __init__(self, width, bias=True, dropout=0.0):
        super().__init__()
        self.fc = nn.Linear(width, 4 * width, bias=bias)
        self.proj = nn.Linear(4 * width, width, bias=bias)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x):
        return self.dropout(self.proj(F.gelu(self.fc(x), approximate="tanh")))


class TransformerBlock(nn.Module):
    """nabla's pre-LN block: x + attn(ln1(x)), then x + mlp(ln2(x))."""

    def __init__(self, width, heads, causal=True, bias=True, dropout=0.0):
        super().__init__()
        self.ln1 = nn.LayerNorm(width, eps=1e-5, bias=bias)
        self.attn = SelfAttention(width, heads, causal, bias, dropout)
        self.ln2 = nn.LayerNorm(width, eps=1e-5, bias=bias)
        self.mlp = Mlp(width, bias, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TokenEmbedding(nn.Embedding):
    """nn.Embedding that also takes ids stored as floats, as nabla's data rows hold them."""

    def forward(self, ids):
        return super().forward(ids.long())


class Gpt(nn.Module):
    """nabla's Gpt: token + position embeddings, pre-LN blocks, a final norm, and a head of
    its own or the token table's transpose (tied). Takes ids [batch, positions <= context].
    Training drops with probability `dropout` where nanoGPT does."""

    def __init__(self, vocab, context, width, depth, heads, bias=True, tied=False, dropout=0.0):
        super().__init__()
        self.tok_emb = nn.Embedding(vocab, width)
        self.pos_emb = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            TransformerBlock(width, heads, True, bias, dropout) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(width, eps=1e-5, bias=bias)
        self.head = None if tied else nn.Linear(width, vocab, bias=bias)

    def forward(self, ids):
        ids = ids.long()
        x = self.drop(self.tok_emb(ids) + self.pos_emb.weight[: ids.shape[1]])
        for block in self.blocks:
            x = block(x)
        x = self.ln_f(x)
        return x @ self.tok_emb.weight.T if self.head is None else self.head(x)
"#;

/// `", dropout=p"` for a module expression, or nothing for `p = 0`.
fn py_dropout(p: f64) -> String {
    if p > 0.0 {
        format!(", dropout={p:?}")
    } else {
        String::new()
    }
}

/// A block's tensors under nabla's `at` and PyTorch's `tat` (linear ones marked).
fn block_names(at: &str, tat: &str) -> Names {
    [
        ("ln1", false),
        ("attn.qkv", true),
        ("attn.proj", true),
        ("ln2", false),
        ("mlp.fc", true),
        ("mlp.proj", true),
    ]
    .iter()
    .map(|&(n, linear)| (format!("{at}.{n}"), format!("{tat}.{n}"), linear))
    .collect()
}

/// A sequence layer `l` (nabla name `at`, PyTorch name `tat`, input `shape`) as a PyTorch
/// module expression and its tensors as (nabla's prefix, PyTorch's, linear?).
pub(super) fn sequence_part(
    l: &LayerSpec,
    at: &str,
    tat: &str,
    shape: &[usize],
) -> Result<(String, Names)> {
    let py = |b: bool| if b { "True" } else { "False" };
    let c = shape.last().copied().unwrap_or(0);
    let own = || vec![(at.to_string(), tat.to_string(), false)];
    if let Some(g) = l.gpt_config() {
        let mut names = vec![
            (format!("{at}.tok_emb"), format!("{tat}.tok_emb"), false),
            (format!("{at}.pos_emb"), format!("{tat}.pos_emb"), false),
        ];
        for i in 0..g.depth {
            names.extend(block_names(
                &format!("{at}.blocks.{i}"),
                &format!("{tat}.blocks.{i}"),
            ));
        }
        names.push((format!("{at}.ln_f"), format!("{tat}.ln_f"), false));
        if !g.tied {
            names.push((format!("{at}.head"), format!("{tat}.head"), true));
        }
        let e = format!(
            "Gpt({}, {}, {}, {}, {}, bias={}, tied={}{})",
            g.vocab,
            g.context,
            g.width,
            g.depth,
            g.heads,
            py(g.bias),
            py(g.tied),
            py_dropout(g.dropout)
        );
        return Ok((e, names));
    }
    Ok(match *l {
        LayerSpec::Embedding {
            num_embeddings,
            embedding_dim,
        } => (
            format!("TokenEmbedding({num_embeddings}, {embedding_dim})"),
            own(),
        ),
        LayerSpec::LayerNorm { eps, bias } => (
            format!("nn.LayerNorm({c}, eps={eps:?}, bias={})", py(bias)),
            own(),
        ),
        LayerSpec::MultiHeadAttention {
            heads,
            causal,
            bias,
            dropout,
        } => {
            let names = ["qkv", "proj"]
                .iter()
                .map(|n| (format!("{at}.{n}"), format!("{tat}.{n}"), true))
                .collect();
            let (causal, bias, d) = (py(causal), py(bias), py_dropout(dropout));
            let e = format!("SelfAttention({c}, {heads}, causal={causal}, bias={bias}{d})");
            (e, names)
        }
        LayerSpec::TransformerBlock {
            heads,
            causal,
            bias,
            dropout,
        } => {
            let (causal, bias, d) = (py(causal), py(bias), py_dropout(dropout));
            let e = format!("TransformerBlock({c}, {heads}, causal={causal}, bias={bias}{d})");
            (e, block_names(at, tat))
        }
        ref other => {
            return Err(crate::error::Error::arg(
                "export_torch",
                format!("{at}: {other:?} is not a sequence layer"),
            ))
        }
    })
}
