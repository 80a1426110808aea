//! Checkpoints in the safetensors format: model weights (readable by the Python `safetensors`
//! package) and full training state, written atomically; model files ([`save_model`],
//! [`load_model`]); PyTorch state dicts ([`export_torch`], [`import_torch_network`],
//! [`import_torch`] for plain MLPs); ONNX graphs ([`export_onnx`]) — of any model spec.

mod checkpoint;
mod model_file;
mod onnx;
// Generated from the official onnx.proto by tools/onnx-proto-gen; formatted as generated.
#[allow(missing_docs, dead_code, clippy::all)]
#[rustfmt::skip]
mod onnx_proto;
mod safetensors_file;
mod torch;

pub use checkpoint::{
    load_training_state, load_weights, load_weights_from, save_training_state, save_weights,
    TrainingState, WEIGHTS_FORMAT, WEIGHTS_PREFIX,
};
pub use model_file::{load_model, save_model, ModelCard, Task};
pub use onnx::{export_onnx, onnx_bytes, OnnxHead, OnnxOptions, ONNX_IR_VERSION, ONNX_OPSET};
pub use safetensors_file::{read_tensor_file, write_atomic, write_tensor_file, TensorFile};
pub use torch::{
    export_torch, import_torch, import_torch_network, torch_expression, torch_module,
    torch_sequential, torch_source, TORCH_FORMAT,
};
