//! Weights as safetensors: one f32 tensor per parameter, named as documented in [`super`] and the family
//! modules. Loading checks the file against the model and lists every missing, unexpected or mis-shaped
//! tensor in one error.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Tensor};

use super::{MultistageUNet, UNetError};

impl MultistageUNet {
    /// Writes every parameter to a safetensors file.
    pub fn save_weights(&self, path: &Path) -> Result<(), UNetError> {
        if !self.store().is_real() {
            return Err(UNetError::ShapeOnly);
        }
        let map: HashMap<String, Tensor> = self
            .store()
            .params()
            .into_iter()
            .filter_map(|p| p.var.map(|v| (p.name, v.as_tensor().clone())))
            .collect();
        candle_core::safetensors::save(&map, path).map_err(|e| UNetError::Weights {
            path: path.display().to_string(),
            msg: e.to_string(),
        })
    }

    /// Loads a safetensors file written by [`Self::save_weights`] (or with the same names and shapes).
    pub fn load_weights(&self, path: &Path) -> Result<(), UNetError> {
        if !self.store().is_real() {
            return Err(UNetError::ShapeOnly);
        }
        let werr = |msg: String| UNetError::Weights {
            path: path.display().to_string(),
            msg,
        };
        let device = self.store().device();
        let file: HashMap<String, Tensor> =
            candle_core::safetensors::load(path, &device).map_err(|e| werr(e.to_string()))?;
        let params = self.store().params();
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        let mut wrong_dtype = Vec::new();
        for p in &params {
            match file.get(&p.name) {
                None => missing.push(p.name.clone()),
                Some(t) if t.dims() != p.shape.as_slice() => misshaped.push(format!(
                    "{} (file {:?}, model {:?})",
                    p.name,
                    t.dims(),
                    p.shape
                )),
                Some(t) if t.dtype() != DType::F32 => {
                    wrong_dtype.push(format!("{} ({:?})", p.name, t.dtype()))
                }
                Some(_) => {}
            }
        }
        let mut unexpected: Vec<String> = file
            .keys()
            .filter(|k| !params.iter().any(|p| &p.name == *k))
            .cloned()
            .collect();
        unexpected.sort();
        if !(missing.is_empty()
            && misshaped.is_empty()
            && unexpected.is_empty()
            && wrong_dtype.is_empty())
        {
            let mut parts = Vec::new();
            let list = |v: &[String]| {
                let shown: Vec<&str> = v.iter().take(20).map(String::as_str).collect();
                let more = if v.len() > 20 {
                    format!(", … ({} more)", v.len() - 20)
                } else {
                    String::new()
                };
                format!("{}{more}", shown.join(", "))
            };
            if !missing.is_empty() {
                parts.push(format!("{} missing: {}", missing.len(), list(&missing)));
            }
            if !unexpected.is_empty() {
                parts.push(format!(
                    "{} unexpected: {}",
                    unexpected.len(),
                    list(&unexpected)
                ));
            }
            if !misshaped.is_empty() {
                parts.push(format!(
                    "{} mis-shaped: {}",
                    misshaped.len(),
                    list(&misshaped)
                ));
            }
            if !wrong_dtype.is_empty() {
                parts.push(format!(
                    "{} not f32: {}",
                    wrong_dtype.len(),
                    list(&wrong_dtype)
                ));
            }
            return Err(werr(parts.join("; ")));
        }
        for p in &params {
            if let (Some(var), Some(t)) = (&p.var, file.get(&p.name)) {
                var.set(t)?;
            }
        }
        Ok(())
    }
}
