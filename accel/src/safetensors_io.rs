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
    // A NaN or infinite weight poisons every output (a ReLU even hides it as 0): refuse the file.
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        let t = &tensors[name];
        let finite = t
            .flatten_all()?
            .to_vec1::<f32>()?
            .iter()
            .all(|v| v.is_finite());
        if !finite {
            return Err(AccelError::Shape(format!(
                "{}: {what}: tensor {name:?} contains a non-finite value (NaN or infinity)",
                path.display()
            )));
        }
    }
    Ok(VarBuilder::from_tensors(tensors, DType::F32, device))
}
