//! The `device` param of stages that compute (`train`, `rewind`, `eval`, greedy `soup`).

use tureen_engine::kind::ParamError;

/// A device as the `device` param names it: `auto | cpu | cuda | cuda:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The first GPU if there is one, else the CPU.
    Auto,
    /// The CPU.
    Cpu,
    /// The first GPU (of those the stage sees).
    Cuda,
    /// GPU N (of those the stage sees).
    CudaIndex(usize),
}

impl DeviceSpec {
    /// Parses the param, without asking libtorch which devices exist (validation runs
    /// where the stage may not: e.g. before a Slurm submission). The worker resolves it
    /// to a real device when the stage runs.
    pub fn parse(spec: &str) -> Result<DeviceSpec, ParamError> {
        match spec {
            "auto" => Ok(DeviceSpec::Auto),
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" => Ok(DeviceSpec::Cuda),
            s => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse::<usize>().ok())
                .map(DeviceSpec::CudaIndex)
                .ok_or_else(|| {
                    ParamError::param(
                        "device",
                        format!("expected auto, cpu, cuda or cuda:N, got `{s}`"),
                    )
                }),
        }
    }
}

/// Checks the `device` param (see [`DeviceSpec::parse`]).
pub fn check(spec: &str) -> Result<(), ParamError> {
    DeviceSpec::parse(spec).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::check;

    #[test]
    fn accepts_the_four_forms_and_names_the_param_otherwise() {
        for ok in ["auto", "cpu", "cuda", "cuda:3"] {
            assert_eq!(check(ok), Ok(()));
        }
        for bad in ["gpu", "cuda:", "cuda:x", "CPU"] {
            let err = check(bad).unwrap_err().to_string();
            assert!(
                err.starts_with("params.device:") && err.contains(bad),
                "{err}"
            );
        }
    }
}
