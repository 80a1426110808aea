//! Layer norm, embedding, attention and a transformer block against PyTorch's float64
//! results: values and gradients. The reference values and inputs were written by
//! `tests/fixtures/torch_sequence_ops.py`; agreement is required to 1e-9 relative.

use nabla::nn::loss::{self, Reduction, Target};
use nabla::nn::{LayerNorm, Linear, Module, TransformerBlock};
use nabla::ops::scaled_dot_product_attention;
use nabla::testing::assert_close;
use nabla::{Rng, Tensor};
use serde_json::Value;

const RTOL: f64 = 1e-9;
const ATOL: f64 = 1e-12;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/torch_sequence_ops.json")).unwrap()
}

/// Numbers, with `null` read as −∞ (JSON has no infinity).
fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap_or(f64::NEG_INFINITY))
        .collect()
}

fn sizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as usize)
        .collect()
}

fn tensor(v: &Value, shape: &[usize]) -> Tensor<f64> {
    Tensor::from_vec(floats(v), shape).unwrap()
}

fn leaf(v: &Value, shape: &[usize]) -> Tensor<f64> {
    tensor(v, shape).requires_grad()
}

fn close(ours: &Tensor<f64>, theirs: &Value, what: &str) {
    let want = tensor(theirs, ours.shape());
    if let Err(e) = assert_close(ours, &want, ATOL, RTOL) {
        panic!("{what}: {e}");
    }
}

/// `Σ y ⊙ gy`: its gradients are the vector-Jacobian products with `gy`.
fn against(y: &Tensor<f64>, gy: &Value) -> Tensor<f64> {
    y.mul(&tensor(gy, y.shape())).unwrap().sum_all().unwrap()
}

#[test]
fn layer_norm_matches_pytorch() {
    for c in fixture()["layer_norm"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let ns = sizes(&c["norm_shape"]);
        let x = leaf(&c["x"], &sizes(&c["x_shape"]));
        let w = (!c["w"].is_null()).then(|| leaf(&c["w"], &ns));
        let b = (!c["b"].is_null()).then(|| leaf(&c["b"], &ns));
        let y = x.layer_norm(&ns, w.as_ref(), b.as_ref(), 1e-5).unwrap();
        close(&y, &c["y"], &format!("layer_norm {name} y"));
        let g = against(&y, &c["gy"]).backward().unwrap();
        close(
            g.get(&x).unwrap(),
            &c["dx"],
            &format!("layer_norm {name} dx"),
        );
        if let (Some(w), Some(b)) = (&w, &b) {
            close(
                g.get(w).unwrap(),
                &c["dw"],
                &format!("layer_norm {name} dw"),
            );
            close(
                g.get(b).unwrap(),
                &c["db"],
                &format!("layer_norm {name} db"),
            );
        }
    }
}

#[test]
fn embedding_with_repeated_ids_matches_pytorch() {
    let c = &fixture()["embedding"];
    let table = leaf(&c["table"], &[6, 4]);
    let ids: Vec<usize> = sizes(&c["ids"]);
    let y = table.embedding(&ids).unwrap();
    close(&y, &c["y"], "embedding y");
    let g = against(&y, &c["gy"]).backward().unwrap();
    close(g.get(&table).unwrap(), &c["dtable"], "embedding dtable");
}

#[test]
fn attention_matches_pytorch() {
    for c in fixture()["attention"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let q = leaf(&c["q"], &sizes(&c["q_shape"]));
        let k = leaf(&c["k"], &sizes(&c["k_shape"]));
        let v = leaf(&c["v"], &sizes(&c["v_shape"]));
        let (t, s) = (q.shape()[q.rank() - 2], k.shape()[k.rank() - 2]);
        let mask = (!c["mask"].is_null()).then(|| tensor(&c["mask"], &[t, s]));
        let causal = c["causal"].as_bool().unwrap();
        let y = scaled_dot_product_attention(&q, &k, &v, mask.as_ref(), causal).unwrap();
        close(&y, &c["y"], &format!("attention {name} y"));
        let g = against(&y, &c["gy"]).backward().unwrap();
        for (t, key) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
            close(
                g.get(t).unwrap(),
                &c[key],
                &format!("attention {name} {key}"),
            );
        }
    }
}

/// One pre-LN block (causal attention, GELU MLP) and a linear head: the mean cross-entropy
/// loss of next tokens and its gradients in the input and in all 13 parameter tensors.
#[test]
fn transformer_block_loss_matches_pytorch() {
    let c = &fixture()["block"];
    let s = sizes(&c["shape"]);
    let (b, t, w) = (s[0], s[1], s[2]);
    let vocab = c["vocab"].as_u64().unwrap() as usize;
    let heads = c["heads"].as_u64().unwrap() as usize;
    let mut block =
        TransformerBlock::<f64>::new(w, heads, true, true, (0.1, 0.1), &mut Rng::new(0)).unwrap();
    let p = &c["params"];
    let vec1 = |n: &str, len: usize| leaf(&p[n], &[len]);
    let mat = |n: &str, i: usize, o: usize| leaf(&p[n], &[i, o]);
    let linear = |n: &str, i: usize, o: usize| {
        Linear::from_tensors(
            mat(&format!("{n}.weight"), i, o),
            Some(vec1(&format!("{n}.bias"), o)),
        )
        .unwrap()
    };
    let norm = |n: &str| {
        let mut l = LayerNorm::<f64>::new(w, true, 1e-5).unwrap();
        l.weight = vec1(&format!("{n}.weight"), w);
        l.bias = Some(vec1(&format!("{n}.bias"), w));
        l
    };
    block.ln1 = norm("ln1");
    block.ln2 = norm("ln2");
    block.attn.qkv = linear("attn.qkv", w, 3 * w);
    block.attn.proj = linear("attn.proj", w, w);
    assert_eq!((block.attn.heads, block.attn.causal), (heads, true));
    block.fc = linear("mlp.fc", w, 4 * w);
    block.proj = linear("mlp.proj", 4 * w, w);
    let head = mat("head.weight", w, vocab);
    let x = leaf(&c["x"], &[b, t, w]);
    let out = block.forward(&x).unwrap().reshape(&[b * t, w]).unwrap();
    let logits = out.matmul(&head).unwrap();
    let targets = sizes(&c["targets"]);
    let l = loss::cross_entropy(&logits, Target::Classes(&targets), 0.0, Reduction::Mean).unwrap();
    let want = c["loss"].as_f64().unwrap();
    assert!(
        (l.item().unwrap() - want).abs() <= RTOL * want.abs(),
        "loss"
    );
    let g = l.backward().unwrap();
    close(g.get(&x).unwrap(), &c["dx"], "block dx");
    let mut named = block.named_parameters();
    named.push(("head.weight".into(), head.clone()));
    assert_eq!(named.len(), 13);
    for (n, tensor) in named {
        close(
            g.get(&tensor).unwrap(),
            &c["dparams"][&n],
            &format!("block d{n}"),
        );
    }
}
