//! One module per stage kind; [`register_all`] is the single place kinds are listed.
//! Each module exports its kind's `NAME`, which is how work done elsewhere is attached
//! to the declaration ([`KindRegistry::set_work`]).
//!
//! `command` and uniform/weighted `soup` stages run in tureen's process, and are
//! registered with their work. `train`, `rewind`, `eval` and greedy `soup` stages need
//! libtorch: they name [`TORCH_WORKER`] as their
//! [`StageKind::worker`](tureen_engine::kind::StageKind::worker), and
//! `tureen_torch::register_all` attaches their libtorch work in that program.

pub mod command;
pub mod eval;
pub mod open_clip;
pub mod rewind;
pub mod soup;
pub mod supervisor;
pub mod train;

use std::sync::Arc;

use serde_json::{Map, Value};
use tureen_engine::kind::{KindRegistry, ParamError};

use crate::numerics::NumericsSetting;

/// The program that runs the stages that need libtorch (built beside `tureen`).
pub const TORCH_WORKER: &str = "tureen-torch";

/// Registers every stage kind tureen ships, with the work that needs no libtorch.
pub fn register_all(registry: &mut KindRegistry) {
    registry.register_with_work(Arc::new(command::CommandKind));
    registry.register_with_work(Arc::new(soup::SoupKind));
    registry.register(Arc::new(eval::EvalKind));
    registry.register(Arc::new(train::TrainKind));
    registry.register(Arc::new(rewind::RewindKind));
    registry.register_with_work(Arc::new(open_clip::OpenClipKind));
}

/// The CPU numerics ([`NumericsSetting`]) of a job of `kind` with `params`: a greedy
/// soup's live in its `heldout` params; `None` for kinds that do no libtorch work.
/// Here, not in [`crate::numerics`], because it is the kinds that know which of them
/// run libtorch.
pub fn numerics_setting(
    kind: &str,
    params: &Map<String, Value>,
) -> Result<Option<NumericsSetting>, ParamError> {
    match kind {
        k if [train::NAME, rewind::NAME, eval::NAME].contains(&k) => {
            NumericsSetting::from_params(params).map(Some)
        }
        k if k == soup::NAME => match params.get("heldout") {
            Some(Value::Object(heldout)) => NumericsSetting::from_params(heldout)
                .map(Some)
                .map_err(|e| e.within("heldout")),
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::numerics::Numerics;
    use serde_json::json;

    #[test]
    fn a_greedy_soup_takes_its_setting_from_heldout() {
        let p = json!({"method": "greedy", "heldout": {"numerics": "native"}});
        let s = numerics_setting("soup", p.as_object().unwrap()).unwrap();
        assert_eq!(s.map(|s| s.numerics), Some(Numerics::Native));
        let p = json!({"method": "uniform"});
        assert_eq!(
            numerics_setting("soup", p.as_object().unwrap()).unwrap(),
            None
        );
        assert_eq!(numerics_setting("command", &Map::new()).unwrap(), None);
    }
}
