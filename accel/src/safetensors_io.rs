//! Reading a safetensors file into an f32 `VarBuilder`, shared by the networks that load user checkpoints.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;

use crate::AccelError;

/// Loads every tensor of `path` onto `device` as f32 (files converted from PyTorch may hold f16/f64).
/// `what` names the expected content for the error message.
pub(crate) fn f32_var_builder(
    path: &Path,
    device: &Device,
    what: &str,
) -> Result<VarBuilder<'static>, AccelError> {
    let tensors = candle_core::safetensors::load(path, device).map_err(|e| {
        AccelError::Shape(format!(
            "{}: cannot read {what} (safetensors): {e}",
            path.display()
        ))
    })?;
    checked_f32(tensors, &path.display().to_string(), device, what)
}

/// Like [`f32_var_builder`], from the bytes of a safetensors file; `name` labels the errors.
pub(crate) fn f32_var_builder_from_bytes(
    bytes: &[u8],
    name: &str,
    device: &Device,
    what: &str,
) -> Result<VarBuilder<'static>, AccelError> {
    let tensors = candle_core::safetensors::load_buffer(bytes, device)
        .map_err(|e| AccelError::Shape(format!("{name}: cannot read {what} (safetensors): {e}")))?;
    checked_f32(tensors, name, device, what)
}

/// Converts to f32 and refuses non-finite values.
fn checked_f32(
    tensors: HashMap<String, Tensor>,
    name: &str,
    device: &Device,
    what: &str,
) -> Result<VarBuilder<'static>, AccelError> {
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    // A NaN or infinite weight poisons every output (a ReLU even hides it as 0): refuse the file.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for tn in names {
        let t = &tensors[tn];
        let finite = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(AccelError::Shape(format!(
                "{name}: {what}: tensor {tn:?} contains a non-finite value (NaN or infinity)"
            )));
        }
    }
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}
