//! Chapter 10: shipping a model — a model file, loading it back for inference, and the same
//! network for PyTorch and ONNX Runtime.
//!
//! `cargo run --release -p nabla-book --bin ch10_shipping`

use nabla::data::synthetic::spiral;
use nabla::io::{load_model, onnx_bytes, save_model, torch_source, ModelCard, OnnxOptions, Task};
use nabla::nn::loss::{accuracy, cross_entropy, Reduction, Target};
use nabla::nn::{MlpConfig, ModelSpec, Module, Predictor};
use nabla::optim::{Adam, AdamConfig, Optimizer};

fn main() -> nabla::Result<()> {
    // ANCHOR: train
    let spec = ModelSpec::mlp(&MlpConfig::new(&[2, 32, 32, 3]));
    let model = spec.build::<f32>()?;
    let data = spiral(100, 3, 0.2, 0)?;
    let mut opt = Adam::new(model.named_parameters(), AdamConfig::adam(0.01))?;
    for _ in 0..500 {
        let logits = model.forward(&data.x)?;
        let loss = cross_entropy(&logits, Target::Classes(&data.labels), 0.0, Reduction::Mean)?;
        opt.step(&loss.backward()?)?;
    }
    // ANCHOR_END: train
    // ANCHOR: save
    // The model file: the weights (safetensors, readable from Python) and a card — the spec
    // to rebuild the network, the task, the input units and the class names.
    let dir = std::env::temp_dir().join(format!("nabla-book-ch10-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let path = dir.join("model.safetensors");
    let mut card = ModelCard::new(spec.clone(), Task::Classification);
    card.class_names = vec!["arm 0".into(), "arm 1".into(), "arm 2".into()];
    save_model(&path, &model, &card)?;
    let (loaded, card) = load_model(&path)?;
    // Inference: evaluation mode, no graph, batches.
    let before = Predictor::new(model).predict(&data.x)?.to_vec()?;
    let predictor = Predictor::new(loaded);
    let after = predictor.predict(&data.x)?.to_vec()?;
    let same = before
        .iter()
        .zip(&after)
        .all(|(a, b)| a.to_bits() == b.to_bits());
    let classes = predictor.predict_classes(&data.x)?;
    println!(
        "loaded: {} classes {:?}",
        card.class_names.len(),
        card.class_names
    );
    println!("same logits bit for bit after the round trip: {same}");
    println!(
        "training accuracy {:.1}%",
        100.0 * accuracy(&classes, &data.labels)
    );
    // ANCHOR_END: save
    // ANCHOR: export
    // For PyTorch: the module's source (its state dict: `nabla export --format torch`) ...
    println!("PyTorch module:\n{}", torch_source(&spec)?);
    // ... and for ONNX Runtime (or any ONNX runtime): one self-contained file.
    let onnx = onnx_bytes(predictor.model(), &OnnxOptions::default())?;
    println!("ONNX file: {} bytes", onnx.len());
    // ANCHOR_END: export
    std::fs::remove_dir_all(&dir).expect("the temporary directory is ours");
    Ok(())
}
