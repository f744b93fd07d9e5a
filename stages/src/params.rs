//! Reading a stage's params into typed structs, with errors that name the param.

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use tureen_engine::diag::suggest;
use tureen_engine::kind::ParamError;

use crate::model::ConfigError;

/// Deserializes `params` into the struct `T`. An unknown param is named with the
/// closest of `T`'s fields; a wrong value is named by its path
/// (`params.data.augment.scale`).
pub fn deserialize<T: DeserializeOwned>(params: &Map<String, Value>) -> Result<T, ParamError> {
    let fields = field_names::<T>();
    if let Some(unknown) = params.keys().find(|k| !fields.contains(&k.as_str())) {
        let hint = suggest(unknown, fields.iter().copied())
            .map(|s| format!("did you mean `{s}`? "))
            .unwrap_or_default();
        return Err(ParamError::param(
            unknown.as_str(),
            format!("unknown param ({hint}known: {})", fields.join(", ")),
        ));
    }
    serde_path_to_error::deserialize(Value::Object(params.clone())).map_err(|e| {
        let path = e.path().to_string();
        let message = e.into_inner().to_string();
        match path.as_str() {
            "." | "" => ParamError::params(message),
            _ => ParamError::param(path, message),
        }
    })
}

/// The field names of the struct `T` as its `Deserialize` impl declares them: it hands
/// them to `deserialize_struct`, which this deserializer answers with them (as its error)
/// instead of data.
pub fn field_names<T: DeserializeOwned>() -> &'static [&'static str] {
    match T::deserialize(FieldNames) {
        Err(FieldsOrError::Fields(fields)) => fields,
        _ => &[],
    }
}

struct FieldNames;

#[derive(Debug)]
enum FieldsOrError {
    Fields(&'static [&'static str]),
    Other,
}

impl std::fmt::Display for FieldsOrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("not a struct")
    }
}

impl std::error::Error for FieldsOrError {}

impl serde::de::Error for FieldsOrError {
    fn custom<M: std::fmt::Display>(_: M) -> Self {
        FieldsOrError::Other
    }
}

impl<'de> serde::Deserializer<'de> for FieldNames {
    type Error = FieldsOrError;

    fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(FieldsOrError::Other)
    }

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        Err(FieldsOrError::Fields(fields))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// A model config problem as a problem of the `model` param.
pub fn model_error(e: ConfigError) -> ParamError {
    ParamError::param(format!("model.{}", e.field), e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct P {
        lr: f64,
        batch_size: u64,
    }

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn a_misspelt_param_is_named_with_the_closest_known_one() {
        assert_eq!(field_names::<P>(), ["lr", "batch_size"]);
        let err = deserialize::<P>(&params(serde_json::json!({"lrr": 1}))).unwrap_err();
        assert_eq!(err.field.key(), "lrr");
        assert!(err.to_string().contains("did you mean `lr`?"), "{err}");
    }

    #[test]
    fn a_wrong_value_is_named_by_its_path() {
        let err =
            deserialize::<P>(&params(serde_json::json!({"lr": 1, "batch_size": "x"}))).unwrap_err();
        assert_eq!(err.field.key(), "batch_size");
        assert!(
            err.to_string()
                .starts_with("params.batch_size: invalid type"),
            "{err}"
        );
    }
}
