//! Checkpoints in the safetensors format: model weights (readable by the Python `safetensors`
//! package) and full training state, written atomically; and PyTorch state dicts of MLPs
//! ([`export_torch`], [`import_torch`]).

mod checkpoint;
mod safetensors_file;
mod torch;

pub use checkpoint::{
    load_training_state, load_weights, load_weights_from, save_training_state, save_weights,
    TrainingState, WEIGHTS_FORMAT, WEIGHTS_PREFIX,
};
pub use safetensors_file::{read_tensor_file, write_atomic, write_tensor_file, TensorFile};
pub use torch::{export_torch, import_torch, torch_module, torch_sequential, TORCH_FORMAT};
