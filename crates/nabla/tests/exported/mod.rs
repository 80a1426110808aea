//! Helpers shared by the export tests (ONNX and PyTorch): models whose every parameter is off
//! its initial value, and token ids.
#![allow(dead_code)] // each test binary uses a part

use nabla::nn::{named_state, ModelSpec, Module, Network};
use nabla::Tensor;

/// `spec` built with every parameter moved off its initial value (norms away from 1, biases
/// away from 0), so that a weight the graph left out or misplaced would show; in evaluation
/// mode (an export is inference: dropout is the identity there).
pub fn perturbed(spec: &str) -> Network<f32> {
    let mut model = ModelSpec::from_json(spec).unwrap().build::<f32>().unwrap();
    model.set_training(false);
    for (i, (_, t)) in named_state(&model).into_iter().enumerate() {
        let noise = Tensor::<f32>::randn(t.shape(), 0.0, 0.3, 100 + i as u64).unwrap();
        let noise = noise.to_vec().unwrap();
        t.update_data(|d| d.iter_mut().zip(&noise).for_each(|(v, n)| *v += n))
            .unwrap();
    }
    model
}

/// Token ids `[rows, positions]` below `vocab`, as the integral floats nabla's models take.
pub fn token_ids(rows: usize, positions: usize, vocab: usize, seed: u64) -> Tensor<f32> {
    let u = Tensor::<f32>::rand_uniform(&[rows, positions], 0.0, 1.0, seed)
        .unwrap()
        .to_vec()
        .unwrap();
    let ids: Vec<f32> = u
        .iter()
        .map(|v| (v * vocab as f32).floor().min(vocab as f32 - 1.0))
        .collect();
    Tensor::from_vec(ids, &[rows, positions]).unwrap()
}
