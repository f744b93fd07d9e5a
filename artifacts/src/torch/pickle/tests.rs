//! The interpreter on hand-written pickles: what it builds, and what it refuses.

use super::*;

fn run(bytes: &[u8]) -> Result<Pickle, PickleError> {
    interpret(bytes)
}

fn root(p: &Pickle) -> &Value {
    p.value(p.root)
}

#[test]
fn builds_dicts_lists_and_scalars() {
    // {'epoch': 3, 'lr': 0.5, 'ok': True, 'xs': [1, -2, 300000], 'n': None}
    let mut b = vec![0x80, 2, b'}', b'('];
    b.extend(b"X\x05\x00\x00\x00epochK\x03");
    b.extend(b"X\x02\x00\x00\x00lrG");
    b.extend(0.5f64.to_be_bytes());
    b.extend(b"X\x02\x00\x00\x00ok\x88");
    b.extend(b"X\x02\x00\x00\x00xs](K\x01J");
    b.extend((-2i32).to_le_bytes());
    b.extend(b"\x8a\x03");
    b.extend(&300000i64.to_le_bytes()[..3]);
    b.extend(b"e");
    b.extend(b"X\x01\x00\x00\x00nNu.");
    let p = run(&b).unwrap();
    let Value::Dict(d) = root(&p) else {
        panic!("not a dict")
    };
    let entries: Vec<(&Value, &Value)> = d
        .entries
        .iter()
        .map(|&(k, v)| (p.value(k), p.value(v)))
        .collect();
    assert_eq!(entries.len(), 5);
    assert!(matches!(entries[0], (Value::Str(k), Value::Int(3)) if &**k == "epoch"));
    assert!(matches!(entries[1].1, Value::Float(f) if *f == 0.5));
    assert!(matches!(entries[2].1, Value::Bool(true)));
    let Value::List(xs) = entries[3].1 else {
        panic!()
    };
    let xs: Vec<i64> = xs
        .iter()
        .map(|&i| match p.value(i) {
            Value::Int(v) => *v,
            _ => panic!(),
        })
        .collect();
    assert_eq!(xs, [1, -2, 300000]);
    assert!(matches!(entries[4].1, Value::None));
}

#[test]
fn immutable_constants_are_shared() {
    let p = run(b"\x80\x02(\x89\x89NN))K\x07K\x07t.").unwrap();
    let Value::Tuple(items) = root(&p) else {
        panic!()
    };
    assert_eq!(items.len(), 8);
    assert!(items.chunks(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(p.values.len(), 5, "four constants and the tuple");
}

#[test]
fn memo_shares_values_instead_of_copying_them() {
    // l = [1]; [l, l, l] through BINPUT/BINGET: one list in the arena, referenced thrice.
    let b = b"\x80\x02](K\x01eq\x00h\x00h\x00\x87.";
    let p = run(b).unwrap();
    let Value::Tuple(items) = root(&p) else {
        panic!()
    };
    assert_eq!(items.len(), 3);
    assert!(items.iter().all(|&i| i == items[0]));
}

#[test]
fn a_global_outside_the_allow_list_is_refused_by_name() {
    // The classic: os.system('touch ...') by GLOBAL + REDUCE.
    let b = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00trueq\x01\x85R.";
    let e = run(b).unwrap_err();
    assert!(e.what.contains("`os.system` is not allowed"), "{e}");
    assert_eq!(e.offset, 2);
    for (m, n) in [
        ("builtins", "eval"),
        ("torch", "load"),
        ("numpy", "ndarray"),
    ] {
        let mut bytes = vec![0x80, 2, b'c'];
        bytes.extend(format!("{m}\n{n}\n.").as_bytes());
        let e = run(&bytes).unwrap_err();
        assert!(e.what.contains(&format!("`{m}.{n}`")), "{e}");
    }
    // STACK_GLOBAL goes through the same table.
    let b = b"\x80\x04\x8c\x08builtins\x8c\x04exec\x93.";
    assert!(run(b).unwrap_err().what.contains("`builtins.exec`"));
}

#[test]
fn object_building_opcodes_are_refused() {
    for op in [b'i', b'o', 0x81, 0x92] {
        let e = run(&[0x80, 2, b')', op, b'.']).unwrap_err();
        assert!(e.what.contains("not supported"), "{op:#x}: {e}");
    }
}

#[test]
fn deep_nesting_needs_no_recursion() {
    // A million nested lists: [[[[...]]]].
    let n = 1_000_000;
    let mut b = vec![0x80, 2];
    b.extend(std::iter::repeat_n(b']', n));
    b.extend(std::iter::repeat_n(b'a', n - 1));
    b.push(b'.');
    let p = run(&b).unwrap();
    assert_eq!(p.values.len(), n);
}

#[test]
fn huge_memo_indices_allocate_nothing_and_unknown_ones_fail() {
    let b = b"\x80\x02Nr\xff\xff\xff\xff0j\xff\xff\xff\xff.";
    assert!(matches!(root(&run(b).unwrap()), Value::None));
    let e = run(b"\x80\x02j\x00\x00\x00\x01.").unwrap_err();
    assert!(e.what.contains("never stored"), "{e}");
}

#[test]
fn a_pickle_bomb_of_values_is_stopped_at_the_limit() {
    // Mutable values (lists) each get their own slot...
    let mut b = vec![0x80, 2];
    b.extend(std::iter::repeat_n(b']', MAX_VALUES + 1));
    let e = run(&b).unwrap_err();
    assert!(
        e.what.contains("more than") && e.what.contains("pickle bomb"),
        "{e}"
    );
    // ...immutable ones are shared, and the stack holding them is bounded too.
    let mut b = vec![0x80, 2];
    b.extend(std::iter::repeat_n(b')', MAX_VALUES + 2));
    let e = run(&b).unwrap_err();
    assert!(e.what.contains("a stack of more than"), "{e}");
}

#[test]
fn lengths_are_checked_before_anything_is_allocated() {
    // BINUNICODE8 claiming 2^60 bytes, BINBYTES claiming 4 GB.
    let mut b = vec![0x80, 4, 0x8d];
    b.extend((1u64 << 60).to_le_bytes());
    assert!(run(&b).unwrap_err().what.contains("remain"));
    let e = run(b"\x80\x02B\xff\xff\xff\xff").unwrap_err();
    assert!(e.what.contains("remain"), "{e}");
    assert!(run(b"\x80\x02\x8a\x10")
        .unwrap_err()
        .what
        .contains("remain"));
}

#[test]
fn malformed_streams_are_errors() {
    for (bytes, expect) in [
        (&b""[..], "without STOP"),
        (b"\x80\x02", "without STOP"),
        (b"\x80\x02.", "underflow"),
        (b"\x80\x02a.", "underflow"),
        (b"\x80\x02Nt.", "no MARK"),
        (b"\x80\x02K\x01K\x02s.", "underflow"),
        (b"\x80\x02NK\x01K\x02s.", "not a dict"),
        (b"\x80\x02}]K\x01s.", "dict key"),
        (b"\x80\x09.", "protocol 9"),
        (b"\x80\x02\xfe.", "0xfe"),
        (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.", "UTF-8"),
        (b"\x80\x02NN\x85R.", "not an allowed global"),
    ] {
        let e = run(bytes).unwrap_err();
        assert!(e.what.contains(expect), "{bytes:?}: {e}");
    }
}

#[test]
fn a_tensor_is_rebuilt_from_its_persistent_storage() {
    // _rebuild_tensor_v2(PERSID(('storage', FloatStorage, '0', 'cpu', 6)), 1, (2, 2),
    //                    (2, 1), False, OrderedDict())
    let mut b = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(".to_vec();
    b.extend(b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\n");
    b.extend(b"X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x06tQ");
    b.extend(b"K\x01K\x02K\x02\x86K\x02K\x01\x86\x89ccollections\nOrderedDict\n)RtR.");
    let p = run(&b).unwrap();
    let Value::Tensor(t) = root(&p) else {
        panic!("{:?}", root(&p))
    };
    assert_eq!(
        (t.offset, &t.shape[..], &t.stride[..]),
        (1, &[2, 2][..], &[2, 1][..])
    );
    assert_eq!(
        p.value(t.storage),
        &Value::Storage(Storage {
            dtype: Dtype::F32,
            key: "0".into(),
            numel: 6
        })
    );
}
