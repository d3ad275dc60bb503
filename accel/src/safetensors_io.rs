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
    let tensors: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, v)| Ok((k, v.to_dtype(DType::F32)?)))
        .collect::<Result<_, candle_core::Error>>()?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}
