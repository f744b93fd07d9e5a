//! The `device` param of stages that compute (`train`, `rewind`, `eval`, greedy `soup`).

/// Checks `device: auto | cpu | cuda | cuda:N` without asking libtorch which devices
/// exist (validation runs where the stage may not: e.g. before a Slurm submission).
/// The worker resolves it to a real device when the stage runs.
pub fn check(spec: &str) -> Result<(), String> {
    match spec {
        "auto" | "cpu" | "cuda" => Ok(()),
        s if s
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok()) =>
        {
            Ok(())
        }
        s => Err(format!(
            "params.device: expected auto, cpu, cuda or cuda:N, got `{s}`"
        )),
    }
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
            let err = check(bad).unwrap_err();
            assert!(err.starts_with("params.device:") && err.contains(bad), "{err}");
        }
    }
}
