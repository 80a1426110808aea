//! Checkpoints in the safetensors format: model weights (readable by the Python `safetensors`
//! package) and full training state, written atomically; and PyTorch state dicts of MLPs
//! ([`export_torch`], [`import_torch`]); ONNX graphs of MLPs ([`export_onnx`]).

mod checkpoint;
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
pub use onnx::{export_onnx, onnx_bytes, OnnxHead, OnnxOptions, ONNX_IR_VERSION, ONNX_OPSET};
pub use safetensors_file::{read_tensor_file, write_atomic, write_tensor_file, TensorFile};
pub use torch::{export_torch, import_torch, torch_module, torch_sequential, TORCH_FORMAT};
