//! Device selection for the accel backend.

use candle_core::Device;

use crate::AccelError;

/// Where the accel backend runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    #[default]
    Cpu,
    /// CUDA device with this ordinal (needs the `cuda` feature).
    Cuda(usize),
}

/// Opens the device; asking for CUDA in a CPU-only build is an error that says how to get CUDA.
pub fn device(kind: DeviceKind) -> Result<Device, AccelError> {
    match kind {
        DeviceKind::Cpu => Ok(Device::Cpu),
        DeviceKind::Cuda(ordinal) => {
            if cfg!(feature = "cuda") {
                Ok(Device::new_cuda(ordinal)?)
            } else {
                Err(AccelError::CudaNotBuilt)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_opens() {
        assert!(device(DeviceKind::Cpu).unwrap().is_cpu());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_get_it() {
        let err = device(DeviceKind::Cuda(0)).unwrap_err();
        assert!(err.to_string().contains("--features cuda"));
    }
}
