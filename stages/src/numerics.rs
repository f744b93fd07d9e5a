//! The `numerics` param of the libtorch stages (`train`, `rewind`, `eval`, and a greedy
//! `soup`'s `heldout`): how their CPU floating-point work is pinned.
//!
//! libtorch picks kernels by CPU: ATen's vectorised kernels by the widest ISA it finds
//! (`ATEN_CPU_CAPABILITY`), MKL's GEMMs by ISA, vendor and cache sizes (`MKL_CBWR`), and
//! convolutions go to oneDNN or NNPACK, whose blocking follows the ISA and cache sizes;
//! every reduction's order also depends on the thread count. So the same stage gives
//! other bytes on another CPU model. `portable` pins each of these to what every x86-64
//! server of the last decade has (see `tureen_torch::numerics` for the settings and the
//! measurements behind them); `native` lets libtorch choose (faster, reproducible only on
//! the same CPU model and thread count).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tureen_engine::kind::ParamError;

/// How a stage's CPU numerics are pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Numerics {
    /// The same bytes on any x86-64 CPU with AVX2 and FMA, for a given thread count.
    #[default]
    Portable,
    /// libtorch's own kernel choices for this CPU.
    Native,
}

impl Numerics {
    /// The param's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Numerics::Portable => "portable",
            Numerics::Native => "native",
        }
    }
}

/// Intra-op threads of a portable stage that does not set `threads`. Reductions split
/// their work by thread count, so a portable result needs a count that does not follow
/// the machine's cores; 2 is what the small pipeline and the benchmarks use.
pub const PORTABLE_DEFAULT_THREADS: i32 = 2;

/// The numerics of one libtorch stage, as the worker needs them before libtorch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumericsSetting {
    /// The `numerics` param (default portable).
    pub numerics: Numerics,
    /// Intra-op threads: the stage's `threads`, else [`PORTABLE_DEFAULT_THREADS`] when
    /// portable, else `None` (libtorch's default, the machine's cores).
    pub threads: Option<i32>,
}

impl NumericsSetting {
    /// From the params that hold `numerics` and `threads` (a stage's params, or a
    /// greedy soup's `heldout`). Errors name the param.
    pub fn from_params(params: &Map<String, Value>) -> Result<NumericsSetting, ParamError> {
        let numerics = match params.get("numerics") {
            None | Some(Value::Null) => Numerics::default(),
            Some(v) => serde_json::from_value(v.clone()).map_err(|_| {
                ParamError::param("numerics", format!("expected `portable` or `native`, got {v}"))
            })?,
        };
        let threads = match params.get("threads") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_i64() {
                Some(t) if (1..=4096).contains(&t) => Some(t as i32),
                _ => {
                    return Err(ParamError::param(
                        "threads",
                        format!("expected 1..4096, got {v}"),
                    ))
                }
            },
        };
        let threads = match (numerics, threads) {
            (_, Some(t)) => Some(t),
            (Numerics::Portable, None) => Some(PORTABLE_DEFAULT_THREADS),
            (Numerics::Native, None) => None,
        };
        Ok(NumericsSetting { numerics, threads })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn setting(v: Value) -> Result<NumericsSetting, String> {
        NumericsSetting::from_params(v.as_object().unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn portable_is_the_default_and_fixes_the_thread_count() {
        let s = setting(json!({})).unwrap();
        assert_eq!(s.numerics, Numerics::Portable);
        assert_eq!(s.threads, Some(PORTABLE_DEFAULT_THREADS));
        let s = setting(json!({"numerics": "portable", "threads": 4})).unwrap();
        assert_eq!(s.threads, Some(4));
    }

    #[test]
    fn native_leaves_the_thread_count_to_libtorch_unless_set() {
        let s = setting(json!({"numerics": "native"})).unwrap();
        assert_eq!((s.numerics, s.threads), (Numerics::Native, None));
        let s = setting(json!({"numerics": "native", "threads": 3})).unwrap();
        assert_eq!(s.threads, Some(3));
    }

    #[test]
    fn bad_values_name_the_param() {
        let e = setting(json!({"numerics": "fast"})).unwrap_err();
        assert!(
            e.contains("params.numerics") && e.contains("portable"),
            "{e}"
        );
        let e = setting(json!({"threads": 0})).unwrap_err();
        assert!(e.contains("params.threads"), "{e}");
    }
}
