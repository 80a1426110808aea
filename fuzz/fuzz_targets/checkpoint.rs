//! The safetensors checkpoint reader on arbitrary bytes, then loading what it accepts into a
//! small model (the same checks `load_weights` makes).
#![no_main]
use libfuzzer_sys::fuzz_target;
use nabla::io::TensorFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = TensorFile::from_bytes(data) {
        for (name, (_dtype, shape)) in file.describe() {
            if let Some(t) = file.get::<f32>(&name) {
                assert_eq!(t.shape(), &shape[..]);
            }
        }
        let cfg = nabla::nn::MlpConfig::new(&[2, 3]);
        let model = nabla::nn::Mlp::<f32>::new(&cfg).expect("valid config");
        let _ = nabla::io::load_weights_from(&file, "fuzz", &model);
    }
});
