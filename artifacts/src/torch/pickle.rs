//! An allow-list pickle *interpreter*: it builds a tree of plain values from the opcodes
//! of `data.pkl` and never imports, calls or executes anything.
//!
//! Python's unpickler resolves every `GLOBAL` to a Python object and calls what `REDUCE`
//! names, which is how a checkpoint can run `os.system`. Here a `GLOBAL` is looked up in
//! a fixed table ([`Global`]): `collections.OrderedDict`, torch's tensor-rebuild
//! functions, the `*Storage` classes and `torch.Size`. Anything else is refused with its
//! name before a single further opcode runs. `REDUCE` of an allowed global builds the
//! corresponding value (an empty dict, a [`Tensor`] description...).
//!
//! Memory is bounded by the input: values live in one arena and are referenced by index,
//! so `BINGET` of a large container shares it instead of copying it, deep nesting needs
//! no recursion (the interpreter and the arena's drop are loops), memo indices go into a
//! hash map (a huge index allocates nothing), and the arena holds at most
//! [`MAX_VALUES`] values. Every length read from the stream is checked against the bytes
//! that remain before anything is allocated.

use std::collections::HashMap;

use crate::safetensors::Dtype;

/// The most values one pickle may create (each opcode creates at most one). A real
/// convnext_xxlarge checkpoint with optimizer state needs about 20,000.
pub const MAX_VALUES: usize = 1 << 22;

/// Index of a value in the arena.
pub(crate) type Id = u32;

/// A callable or class a pickle may name (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Global {
    /// `collections.OrderedDict`: a dict.
    OrderedDict,
    /// `torch._utils._rebuild_tensor_v2`: a tensor view of a storage.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter`: an `nn.Parameter` around a tensor.
    RebuildParameter,
    /// `torch.<Type>Storage` of a supported element type.
    Storage(Dtype),
    /// `torch.Size`: a tuple.
    TorchSize,
}

impl Global {
    /// The allow-list: the globals a `torch.save` of tensors and plain containers
    /// (state dicts, optimizer state) uses. Everything else is refused.
    fn resolve(module: &str, name: &str) -> Option<Global> {
        Some(match (module, name) {
            ("collections", "OrderedDict") => Global::OrderedDict,
            ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
            ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
            ("torch", "Size") => Global::TorchSize,
            ("torch", storage) => Global::Storage(storage_dtype(storage)?),
            _ => return None,
        })
    }
}

/// The element type of a legacy typed storage class (`torch.FloatStorage`...).
fn storage_dtype(class: &str) -> Option<Dtype> {
    Some(match class {
        "FloatStorage" => Dtype::F32,
        "DoubleStorage" => Dtype::F64,
        "HalfStorage" => Dtype::F16,
        "BFloat16Storage" => Dtype::BF16,
        "LongStorage" => Dtype::I64,
        "IntStorage" => Dtype::I32,
        "ShortStorage" => Dtype::I16,
        "CharStorage" => Dtype::I8,
        "ByteStorage" => Dtype::U8,
        "BoolStorage" => Dtype::BOOL,
        _ => return None,
    })
}

/// A storage named by a persistent id: `('storage', <class>, key, location, numel)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storage {
    /// Element type (from the storage class).
    pub dtype: Dtype,
    /// The key: its bytes are the archive entry `data/<key>`.
    pub key: String,
    /// Elements in the storage.
    pub numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it: a strided view of a storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tensor {
    /// The storage value it views.
    pub(crate) storage: Id,
    /// Offset of the first element, in elements.
    pub offset: u64,
    /// Dimensions (empty for a scalar).
    pub shape: Vec<u64>,
    /// Strides, in elements.
    pub stride: Vec<u64>,
}

/// A hashable dict key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Str(Box<str>),
    Int(i64),
    Bool(bool),
    None,
}

/// A dict (or OrderedDict): entries in insertion order, a key set anew keeps its place.
#[derive(Debug, Default, PartialEq)]
pub struct Dict {
    pub(crate) entries: Vec<(Id, Id)>,
    index: HashMap<Key, usize>,
}

/// One value of the object tree that `data.pkl` builds; containers refer to their items
/// by arena id.
#[derive(Debug, PartialEq)]
pub enum Value {
    /// Python's `None`.
    None,
    /// `True` or `False`.
    Bool(bool),
    /// An int that fits in 64 bits (longer ones are refused).
    Int(i64),
    /// A float (Python's are doubles).
    Float(f64),
    /// A `str` (UTF-8; an invalid one is refused).
    Str(Box<str>),
    /// A `bytes` object.
    Bytes(Box<[u8]>),
    /// A tuple; items are arena ids, read them through [`Node`](super::Node).
    Tuple(Vec<Id>),
    /// A list; items are arena ids, read them through [`Node`](super::Node).
    List(Vec<Id>),
    /// A dict or `OrderedDict`, in insertion order.
    Dict(Dict),
    /// An allowed class or function that was named but not (yet) called.
    Global(Global),
    /// A storage named by a persistent id: the archive entry holding tensor bytes.
    Storage(Storage),
    /// A tensor rebuilt by `_rebuild_tensor_v2` (or a parameter wrapping one).
    Tensor(Tensor),
}

impl Value {
    /// What kind of value this is, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool(_) => "a bool",
            Value::Int(_) => "an int",
            Value::Float(_) => "a float",
            Value::Str(_) => "a string",
            Value::Bytes(_) => "bytes",
            Value::Tuple(_) => "a tuple",
            Value::List(_) => "a list",
            Value::Dict(_) => "a dict",
            Value::Global(_) => "a class or function",
            Value::Storage(_) => "a storage",
            Value::Tensor(_) => "a tensor",
        }
    }
}

/// The result of interpreting a pickle: an arena of values and the root.
#[derive(Debug)]
pub struct Pickle {
    pub(crate) values: Vec<Value>,
    pub(crate) root: Id,
}

impl Pickle {
    pub(crate) fn value(&self, id: Id) -> &Value {
        &self.values[id as usize]
    }
}

/// Why a pickle was refused: the byte offset of the opcode and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("data.pkl byte {offset}: {what}")]
pub struct PickleError {
    /// Byte offset in `data.pkl` of the opcode that was refused.
    pub offset: usize,
    /// What is wrong, in words (a refused global names its module and name).
    pub what: String,
}

/// Interprets `bytes` (a whole pickle) into a value tree.
pub(crate) fn interpret(bytes: &[u8]) -> Result<Pickle, PickleError> {
    let mut vm = Vm {
        input: bytes,
        pos: 0,
        op_start: 0,
        values: Vec::new(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        shared: HashMap::new(),
    };
    let root = vm.run()?;
    Ok(Pickle {
        values: vm.values,
        root,
    })
}

struct Vm<'a> {
    input: &'a [u8],
    pos: usize,
    op_start: usize,
    values: Vec<Value>,
    stack: Vec<Id>,
    marks: Vec<usize>,
    memo: HashMap<u32, Id>,
    /// One value each for the immutable constants torch's pickler repeats per tensor
    /// (`False`, `None`, `()`, small ints): sharing them is what Python does too, and
    /// keeps the arena small.
    shared: HashMap<Shared, Id>,
}

/// An immutable value that is created once and shared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Shared {
    None,
    Bool(bool),
    EmptyTuple,
    Int(i64),
}

type Step<T> = Result<T, PickleError>;

impl<'a> Vm<'a> {
    fn err<T>(&self, what: impl Into<String>) -> Step<T> {
        Err(PickleError {
            offset: self.op_start,
            what: what.into(),
        })
    }

    fn take(&mut self, n: usize) -> Step<&'a [u8]> {
        let input = self.input;
        match self.pos.checked_add(n) {
            Some(end) if end <= input.len() => {
                let s = &input[self.pos..end];
                self.pos = end;
                Ok(s)
            }
            _ => self.err(format!(
                "needs {n} more bytes but only {} remain (truncated pickle?)",
                input.len() - self.pos
            )),
        }
    }

    fn byte(&mut self) -> Step<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Step<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Step<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64_len(&mut self) -> Step<usize> {
        let b = self.take(8)?;
        let n = u64::from_le_bytes(b.try_into().expect("8 bytes"));
        usize::try_from(n).or_else(|_| self.err(format!("length {n} does not fit in memory")))
    }

    /// A newline-terminated line of at most 512 bytes (GLOBAL's module and name).
    fn line(&mut self) -> Step<&'a str> {
        let rest = &self.input[self.pos..];
        let Some(n) = rest.iter().take(512).position(|&b| b == b'\n') else {
            return self.err("GLOBAL: a module or name longer than 512 bytes, or unterminated");
        };
        let text = std::str::from_utf8(&rest[..n]).or_else(|_| self.err("GLOBAL: not UTF-8"))?;
        self.pos += n + 1;
        Ok(text)
    }

    fn alloc(&mut self, v: Value) -> Step<Id> {
        if self.values.len() >= MAX_VALUES {
            return self.err(format!(
                "more than {MAX_VALUES} values: not a checkpoint (pickle bomb?)"
            ));
        }
        self.values.push(v);
        Ok((self.values.len() - 1) as Id)
    }

    fn push(&mut self, v: Value) -> Step<()> {
        let id = self.alloc(v)?;
        self.stack.push(id);
        Ok(())
    }

    /// Pushes the one shared instance of an immutable constant.
    fn push_shared(&mut self, c: Shared) -> Step<()> {
        let id = match self.shared.get(&c) {
            Some(&id) => id,
            None => {
                let id = self.alloc(match c {
                    Shared::None => Value::None,
                    Shared::Bool(b) => Value::Bool(b),
                    Shared::EmptyTuple => Value::Tuple(Vec::new()),
                    Shared::Int(i) => Value::Int(i),
                })?;
                self.shared.insert(c, id);
                id
            }
        };
        self.stack.push(id);
        Ok(())
    }

    fn pop(&mut self) -> Step<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() <= floor {
            return self.err("stack underflow");
        }
        Ok(self.stack.pop().expect("checked"))
    }

    fn top(&self) -> Step<Id> {
        let floor = self.marks.last().copied().unwrap_or(0);
        match self.stack.last() {
            Some(&id) if self.stack.len() > floor => Ok(id),
            _ => self.err("stack underflow"),
        }
    }

    /// Pops everything above the topmost mark, and the mark.
    fn pop_mark(&mut self) -> Step<Vec<Id>> {
        let Some(mark) = self.marks.pop() else {
            return self.err("no MARK to pop to");
        };
        Ok(self.stack.split_off(mark))
    }

    fn str_value(&mut self, len: usize) -> Step<()> {
        let bytes = self.take(len)?;
        let s = std::str::from_utf8(bytes).or_else(|_| self.err("string is not UTF-8"))?;
        self.push(Value::Str(s.into()))
    }

    fn bytes_value(&mut self, len: usize) -> Step<()> {
        let bytes = self.take(len)?;
        self.push(Value::Bytes(bytes.into()))
    }

    fn memo_put(&mut self, index: u32) -> Step<()> {
        let id = self.top()?;
        self.memo.insert(index, id);
        Ok(())
    }

    fn memo_get(&mut self, index: u32) -> Step<()> {
        let Some(&id) = self.memo.get(&index) else {
            return self.err(format!("memo entry {index} was never stored"));
        };
        self.stack.push(id);
        Ok(())
    }

    fn tuple(&mut self, n: usize) -> Step<()> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return self.err("stack underflow");
        }
        let items = self.stack.split_off(self.stack.len() - n);
        self.push(Value::Tuple(items))
    }

    fn key(&self, id: Id) -> Step<Key> {
        Ok(match &self.values[id as usize] {
            Value::Str(s) => Key::Str(s.clone()),
            Value::Int(i) => Key::Int(*i),
            Value::Bool(b) => Key::Bool(*b),
            Value::None => Key::None,
            other => return self.err(format!("{} as a dict key is not supported", other.kind())),
        })
    }

    /// `dict[k] = v` for each pair, on the dict at `target`.
    fn set_items(&mut self, target: Id, pairs: &[Id]) -> Step<()> {
        if !pairs.len().is_multiple_of(2) {
            return self.err("SETITEMS with an odd number of items");
        }
        let keys = pairs
            .chunks(2)
            .map(|kv| self.key(kv[0]))
            .collect::<Step<Vec<Key>>>()?;
        let Value::Dict(dict) = &mut self.values[target as usize] else {
            let kind = self.values[target as usize].kind();
            return self.err(format!("SETITEM on {kind}, not a dict"));
        };
        for (key, kv) in keys.into_iter().zip(pairs.chunks(2)) {
            match dict.index.get(&key) {
                Some(&at) => dict.entries[at].1 = kv[1],
                None => {
                    dict.index.insert(key, dict.entries.len());
                    dict.entries.push((kv[0], kv[1]));
                }
            }
        }
        Ok(())
    }

    fn append(&mut self, target: Id, items: Vec<Id>) -> Step<()> {
        match &mut self.values[target as usize] {
            Value::List(list) => {
                list.extend(items);
                Ok(())
            }
            other => {
                let kind = other.kind();
                self.err(format!("APPEND to {kind}, not a list"))
            }
        }
    }

    fn global(&mut self, module: &str, name: &str) -> Step<()> {
        match Global::resolve(module, name) {
            Some(g) => self.push(Value::Global(g)),
            None => self.err(format!(
                "global `{module}.{name}` is not allowed: only tensors, storages and plain containers are read, and nothing is ever executed"
            )),
        }
    }

    fn run(&mut self) -> Step<Id> {
        loop {
            self.op_start = self.pos;
            if self.pos >= self.input.len() {
                return self.err("the pickle ends without STOP (truncated?)");
            }
            if self.stack.len() + self.marks.len() > MAX_VALUES {
                return self.err(format!(
                    "a stack of more than {MAX_VALUES} items: not a checkpoint (pickle bomb?)"
                ));
            }
            let op = self.byte()?;
            if op == b'.' {
                let root = self.pop()?;
                return Ok(root);
            }
            self.step(op)?;
        }
    }

    fn step(&mut self, op: u8) -> Step<()> {
        match op {
            0x80 => {
                let proto = self.byte()?;
                if proto > 5 {
                    return self.err(format!("pickle protocol {proto} is not supported"));
                }
            }
            // FRAME (protocol 4): a length prefix for buffering; nothing to do.
            0x95 => {
                self.take(8)?;
            }
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let id = self.top()?;
                self.stack.push(id);
            }
            b'N' => self.push_shared(Shared::None)?,
            0x88 => self.push_shared(Shared::Bool(true))?,
            0x89 => self.push_shared(Shared::Bool(false))?,
            b'K' => {
                let v = self.byte()?;
                self.push_shared(Shared::Int(v.into()))?
            }
            b'M' => {
                let v = self.u16()?;
                self.push(Value::Int(v.into()))?
            }
            b'J' => {
                let v = self.u32()? as i32;
                self.push(Value::Int(v.into()))?
            }
            0x8a => {
                let n = self.byte()? as usize;
                self.long(n)?
            }
            0x8b => {
                let n = self.u32()? as i32;
                if n < 0 {
                    return self.err("LONG4 with a negative length");
                }
                self.long(n as usize)?
            }
            b'G' => {
                let b = self.take(8)?;
                self.push(Value::Float(f64::from_be_bytes(b.try_into().expect("8"))))?
            }
            b'X' => {
                let n = self.u32()? as usize;
                self.str_value(n)?
            }
            0x8c => {
                let n = self.byte()? as usize;
                self.str_value(n)?
            }
            0x8d => {
                let n = self.u64_len()?;
                self.str_value(n)?
            }
            // Python 2 strings (SHORT_BINSTRING, BINSTRING): taken as text.
            b'U' => {
                let n = self.byte()? as usize;
                self.str_value(n)?
            }
            b'T' => {
                let n = self.u32()? as usize;
                self.str_value(n)?
            }
            b'C' => {
                let n = self.byte()? as usize;
                self.bytes_value(n)?
            }
            b'B' => {
                let n = self.u32()? as usize;
                self.bytes_value(n)?
            }
            0x8e => {
                let n = self.u64_len()?;
                self.bytes_value(n)?
            }
            _ => return self.containers_and_calls(op),
        }
        Ok(())
    }

    fn containers_and_calls(&mut self, op: u8) -> Step<()> {
        match op {
            b')' => self.push_shared(Shared::EmptyTuple)?,
            b']' => self.push(Value::List(Vec::new()))?,
            b'}' => self.push(Value::Dict(Dict::default()))?,
            b't' => {
                let items = self.pop_mark()?;
                self.push(Value::Tuple(items))?
            }
            0x85 => self.tuple(1)?,
            0x86 => self.tuple(2)?,
            0x87 => self.tuple(3)?,
            b'l' => {
                let items = self.pop_mark()?;
                self.push(Value::List(items))?
            }
            b'd' => {
                let items = self.pop_mark()?;
                self.push(Value::Dict(Dict::default()))?;
                let target = self.top()?;
                self.set_items(target, &items)?
            }
            b'a' => {
                let item = self.pop()?;
                let target = self.top()?;
                self.append(target, vec![item])?
            }
            b'e' => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.append(target, items)?
            }
            b's' => {
                let value = self.pop()?;
                let key = self.pop()?;
                let target = self.top()?;
                self.set_items(target, &[key, value])?
            }
            b'u' => {
                let items = self.pop_mark()?;
                let target = self.top()?;
                self.set_items(target, &items)?
            }
            b'q' => {
                let i = self.byte()?;
                self.memo_put(i.into())?
            }
            b'r' => {
                let i = self.u32()?;
                self.memo_put(i)?
            }
            0x94 => {
                let i = self.memo.len() as u32;
                self.memo_put(i)?
            }
            b'h' => {
                let i = self.byte()?;
                self.memo_get(i.into())?
            }
            b'j' => {
                let i = self.u32()?;
                self.memo_get(i)?
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.global(module, name)?
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (&self.values[module as usize], &self.values[name as usize]) {
                    (Value::Str(m), Value::Str(n)) => {
                        let (m, n) = (m.clone(), n.clone());
                        self.global(&m, &n)?
                    }
                    _ => return self.err("STACK_GLOBAL needs two strings"),
                }
            }
            b'R' => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let v = self.reduce(callable, args)?;
                match v {
                    Reduced::New(v) => self.push(v)?,
                    Reduced::Existing(id) => self.stack.push(id),
                }
            }
            b'b' => {
                let _state = self.pop()?;
                let target = self.top()?;
                // An OrderedDict state dict carries `_metadata` (module versions) as its
                // state; it says nothing about tensors.
                if !matches!(self.values[target as usize], Value::Dict(_)) {
                    let kind = self.values[target as usize].kind();
                    return self.err(format!("BUILD on {kind} is not supported"));
                }
            }
            b'Q' => {
                let pid = self.pop()?;
                let storage = self.persistent_storage(pid)?;
                self.push(Value::Storage(storage))?
            }
            _ => return self.err(format!("opcode {} is not supported", describe_opcode(op))),
        }
        Ok(())
    }

    fn long(&mut self, n: usize) -> Step<()> {
        let bytes = self.take(n)?;
        if n > 8 {
            return self.err(format!("an integer of {n} bytes does not fit in 64 bits"));
        }
        let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
            [0xFF; 8]
        } else {
            [0; 8]
        };
        buf[..n].copy_from_slice(bytes);
        self.push(Value::Int(i64::from_le_bytes(buf)))
    }

    fn persistent_storage(&self, pid: Id) -> Step<Storage> {
        let Value::Tuple(items) = &self.values[pid as usize] else {
            return self.err("a persistent id must be a tuple");
        };
        let parts: Vec<&Value> = items.iter().map(|&i| &self.values[i as usize]).collect();
        match parts.as_slice() {
            [Value::Str(tag), Value::Global(Global::Storage(dtype)), Value::Str(key), Value::Str(_location), Value::Int(numel)]
                if &**tag == "storage" && *numel >= 0 =>
            {
                Ok(Storage {
                    dtype: *dtype,
                    key: key.to_string(),
                    numel: *numel as u64,
                })
            }
            _ => self
                .err("a persistent id must be ('storage', <torch.*Storage>, key, location, numel)"),
        }
    }

    fn reduce(&self, callable: Id, args: Id) -> Step<Reduced> {
        let Value::Global(g) = self.values[callable as usize] else {
            let kind = self.values[callable as usize].kind();
            return self.err(format!("REDUCE calls {kind}, not an allowed global"));
        };
        let Value::Tuple(args) = &self.values[args as usize] else {
            return self.err("REDUCE arguments must be a tuple");
        };
        let arg = |i: usize| args.get(i).map(|&id| &self.values[id as usize]);
        match g {
            Global::OrderedDict if args.is_empty() => {
                Ok(Reduced::New(Value::Dict(Dict::default())))
            }
            Global::OrderedDict => self.err("OrderedDict(...) with arguments is not supported"),
            Global::TorchSize => match arg(0) {
                Some(Value::Tuple(_)) if args.len() == 1 => Ok(Reduced::Existing(args[0])),
                _ => self.err("torch.Size(...) needs one tuple"),
            },
            Global::RebuildParameter => match arg(0) {
                Some(Value::Tensor(_)) => Ok(Reduced::Existing(args[0])),
                _ => self.err("_rebuild_parameter(...) needs a tensor"),
            },
            Global::RebuildTensorV2 => self.rebuild_tensor(args).map(Reduced::New),
            Global::Storage(_) => self.err("a storage class cannot be called"),
        }
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, meta])`.
    fn rebuild_tensor(&self, args: &[Id]) -> Step<Value> {
        if !(6..=7).contains(&args.len()) {
            return self.err(format!(
                "_rebuild_tensor_v2 takes 6 or 7 arguments, got {}",
                args.len()
            ));
        }
        let v = |i: usize| &self.values[args[i] as usize];
        if !matches!(v(0), Value::Storage(_)) {
            return self.err(format!(
                "_rebuild_tensor_v2: the storage is {}",
                v(0).kind()
            ));
        }
        let Value::Int(offset) = *v(1) else {
            return self.err("_rebuild_tensor_v2: the offset must be an int");
        };
        let shape = self.ints(v(2), "size")?;
        let stride = self.ints(v(3), "stride")?;
        if offset < 0 || shape.len() != stride.len() {
            return self.err(format!(
                "_rebuild_tensor_v2: offset {offset}, size {shape:?} and stride {stride:?} do not describe a view"
            ));
        }
        Ok(Value::Tensor(Tensor {
            storage: args[0],
            offset: offset as u64,
            shape,
            stride,
        }))
    }

    fn ints(&self, v: &Value, what: &str) -> Step<Vec<u64>> {
        let Value::Tuple(items) = v else {
            return self.err(format!("_rebuild_tensor_v2: {what} must be a tuple"));
        };
        items
            .iter()
            .map(|&i| match self.values[i as usize] {
                Value::Int(n) if n >= 0 => Ok(n as u64),
                _ => self.err(format!(
                    "_rebuild_tensor_v2: {what} must hold non-negative ints"
                )),
            })
            .collect()
    }
}

enum Reduced {
    New(Value),
    Existing(Id),
}

/// An opcode byte with its pickle name where it has one we refuse on purpose.
fn describe_opcode(op: u8) -> String {
    let name = match op {
        b'i' => "INST",
        b'o' => "OBJ",
        0x81 => "NEWOBJ",
        0x92 => "NEWOBJ_EX",
        0x82..=0x84 => "EXT",
        b'P' => "PERSID (text)",
        b'p' | b'g' => "PUT/GET (text, protocol 0)",
        b'I' | b'L' | b'F' | b'S' | b'V' => "a protocol-0 text opcode",
        0x8f..=0x91 => "a set opcode",
        0x96..=0x98 => "an out-of-band buffer opcode",
        _ => "",
    };
    if name.is_empty() {
        format!("0x{op:02x}")
    } else {
        format!("0x{op:02x} ({name})")
    }
}

#[cfg(test)]
mod tests;
