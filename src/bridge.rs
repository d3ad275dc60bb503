//! Moving matrices between ndarray (reference, f64) and candle (accel, f32).

use candle_core::{DType, Device, Tensor};
use ndarray::Array2;

/// An f64 matrix as an f32 tensor on `device`.
pub fn to_tensor(a: &Array2<f64>, device: &Device) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = a.iter().map(|&x| x as f32).collect();
    Tensor::from_vec(v, a.dim(), device)
}

/// A 2-D tensor (any float dtype, any device) as an f64 matrix.
pub fn to_array(t: &Tensor) -> candle_core::Result<Array2<f64>> {
    let (r, c) = t.dims2()?;
    let v = t.to_dtype(DType::F64)?.flatten_all()?.to_vec1::<f64>()?;
    Ok(Array2::from_shape_vec((r, c), v).expect("a rows x cols tensor has rows*cols values"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn round_trip_rounds_to_f32() {
        let a = array![[1.0, 0.1], [-3.5, 1e-3]];
        let back = to_array(&to_tensor(&a, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(back, a.mapv(|x| x as f32 as f64));
    }
}
