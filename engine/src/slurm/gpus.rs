//! The GPUs of an allocation, seen from inside it.

/// The GPUs Slurm granted to the current job step, for code running *inside* an
/// allocation (`tureen stage-exec`): the ids in `CUDA_VISIBLE_DEVICES`, which Slurm's
/// gres plugin sets for the step. `None` outside Slurm (`SLURM_JOB_ID` unset), when no
/// GPU was granted, or when the variable holds something other than a list of indices
/// (e.g. GPU UUIDs), in which case it is best left as Slurm set it.
pub fn allocated_gpus() -> Option<Vec<u32>> {
    std::env::var_os("SLURM_JOB_ID")?;
    parse_gpu_list(&std::env::var("CUDA_VISIBLE_DEVICES").ok()?)
}

/// Parses `0,1,3` into GPU ids; `None` for an empty or non-numeric list.
pub fn parse_gpu_list(text: &str) -> Option<Vec<u32>> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    text.split(',').map(|id| id.trim().parse().ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn granted_gpu_lists_are_parsed_and_uuids_are_left_alone() {
        assert_eq!(parse_gpu_list("0"), Some(vec![0]));
        assert_eq!(parse_gpu_list("0,1, 3"), Some(vec![0, 1, 3]));
        assert_eq!(parse_gpu_list(""), None);
        assert_eq!(parse_gpu_list("GPU-5f3e1c2a"), None);
        assert_eq!(parse_gpu_list("0,MIG-1"), None);
    }
}
