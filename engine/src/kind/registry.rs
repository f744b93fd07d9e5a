//! [`KindRegistry`]: the kinds a pipeline may use, and the work this program can do.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{StageKind, StageWork};

/// A name given to [`KindRegistry::set_work`] that no registered kind has.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no stage kind `{0}` is registered to attach work to")]
pub struct UnknownKind(pub String);

struct Entry {
    kind: Arc<dyn StageKind>,
    work: Option<Arc<dyn StageWork>>,
}

/// The set of kinds a pipeline may use, looked up by name, each with its work where
/// this program can do it. `tureen` registers every kind but the work of the libtorch
/// ones; `tureen-torch` attaches that work to the same declarations.
#[derive(Default, Clone)]
pub struct KindRegistry {
    kinds: BTreeMap<&'static str, Arc<Entry>>,
}

impl KindRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `kind` without work (its stages run elsewhere, see
    /// [`StageKind::worker`]); a later registration of the same name replaces it.
    pub fn register(&mut self, kind: Arc<dyn StageKind>) {
        let entry = Entry { kind, work: None };
        self.kinds.insert(entry.kind.name(), Arc::new(entry));
    }

    /// Registers a kind that does its own work in this program.
    pub fn register_with_work<K: StageKind + StageWork + 'static>(&mut self, kind: Arc<K>) {
        let entry = Entry {
            kind: kind.clone(),
            work: Some(kind),
        };
        self.kinds.insert(entry.kind.name(), Arc::new(entry));
    }

    /// Attaches `work` to the registered kind called `name` (replacing any work it had).
    pub fn set_work(&mut self, name: &str, work: Arc<dyn StageWork>) -> Result<(), UnknownKind> {
        let (&key, entry) = self
            .kinds
            .get_key_value(name)
            .ok_or_else(|| UnknownKind(name.to_string()))?;
        let entry = Entry {
            kind: entry.kind.clone(),
            work: Some(work),
        };
        self.kinds.insert(key, Arc::new(entry));
        Ok(())
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<dyn StageKind>> {
        self.kinds.get(name).map(|e| &e.kind)
    }

    /// The work of the kind called `name`, if this program can do it.
    pub fn work(&self, name: &str) -> Option<&Arc<dyn StageWork>> {
        self.kinds.get(name).and_then(|e| e.work.as_ref())
    }

    /// Registered names, sorted; used in "unknown kind" errors.
    pub fn names(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.kinds.keys().copied()
    }
}
