//! The webdataset loader: shard lists, pipe sources, errors, corrupt samples,
//! shuffling and determinism.

use std::path::Path;

use tureen_stages::data::{AugmentConfig, DataError, Loader, LoaderConfig, Transform};

/// A small PNG whose pixels encode `index`, so batches can be told apart.
fn png(index: usize, w: u32, h: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (index * 37 % 256) as u8,
            (x * 8 % 256) as u8,
            ((y + index as u32) * 5 % 256) as u8,
        ])
    });
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn add(builder: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) {
    let mut header = tar::Header::new_ustar();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_mtime(0);
    builder.append_data(&mut header, name, data).unwrap();
}

/// Writes `shards` tar files `dir/shard-NN.tar` with `per_shard` samples each; sample
/// `i` has caption `caption i` and label `i % 3`.
fn write_shards(dir: &Path, shards: usize, per_shard: usize) {
    for s in 0..shards {
        let file = std::fs::File::create(dir.join(format!("shard-{s:02}.tar"))).unwrap();
        let mut builder = tar::Builder::new(file);
        for j in 0..per_shard {
            let i = s * per_shard + j;
            add(
                &mut builder,
                &format!("{i:06}.png"),
                &png(i, 24 + (i as u32 % 5), 20),
            );
            add(
                &mut builder,
                &format!("{i:06}.txt"),
                format!("caption {i}").as_bytes(),
            );
            add(
                &mut builder,
                &format!("{i:06}.cls"),
                format!("{}", i % 3).as_bytes(),
            );
        }
        builder.finish().unwrap();
    }
}

fn config(dir: &Path, pattern: &str, batch: usize) -> LoaderConfig {
    let mut c = LoaderConfig::new(pattern, dir, batch, 16);
    c.context_length = 16;
    c.shuffle_buffer = 8;
    c.workers = 2;
    c.transform = Transform::Train(AugmentConfig {
        scale: (0.33, 1.0),
        ratio: (0.75, 4.0 / 3.0),
        erase_prob: 0.5,
    });
    c
}

/// Captions, pixels and tokens of every batch of an epoch.
type Epoch = Vec<(Vec<String>, Vec<f32>, Vec<i64>)>;

fn collect(config: LoaderConfig, epoch: u64) -> Epoch {
    Loader::new(config, epoch)
        .unwrap()
        .map(|b| b.unwrap())
        .map(|b| (b.texts, b.images, b.tokens))
        .collect()
}

/// Bit-for-bit equality (pixels compared as bits, so NaN or -0.0 would not hide).
fn same_batches(
    a: &[(Vec<String>, Vec<f32>, Vec<i64>)],
    b: &[(Vec<String>, Vec<f32>, Vec<i64>)],
) -> bool {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.0 == y.0 && bits(&x.1) == bits(&y.1) && x.2 == y.2)
}

#[test]
fn brace_pattern_reads_every_shard_once_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 3, 5);
    let mut c = config(dir.path(), "shard-{00..02}.tar", 4);
    c.drop_last = false;
    let batches = collect(c, 0);
    let mut texts: Vec<String> = batches.iter().flat_map(|b| b.0.clone()).collect();
    assert_eq!(
        batches.iter().map(|b| b.0.len()).collect::<Vec<_>>(),
        [4, 4, 4, 3]
    );
    texts.sort();
    let mut expected: Vec<String> = (0..15).map(|i| format!("caption {i}")).collect();
    expected.sort();
    assert_eq!(texts, expected);
    let (_, images, tokens) = &batches[0];
    // [4, 3, 16, 16] pixels and [4, 16] token ids, row-major.
    assert_eq!(images.len(), 4 * 3 * 16 * 16);
    assert_eq!(tokens.len(), 4 * 16);
}

#[test]
fn drop_last_drops_the_partial_batch() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 3, 5);
    let batches = collect(config(dir.path(), "shard-{00..02}.tar", 4), 0);
    assert_eq!(batches.len(), 3);
}

#[test]
fn batches_are_identical_whatever_the_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 3, 7);
    let mut runs = Vec::new();
    for workers in [1, 2, 5] {
        let mut c = config(dir.path(), "shard-{00..02}.tar", 3);
        c.workers = workers;
        runs.push(collect(c, 4));
    }
    assert!(same_batches(&runs[0], &runs[1]));
    assert!(same_batches(&runs[0], &runs[2]));
}

#[test]
fn shuffling_depends_on_seed_and_epoch_only() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 4, 6);
    let order = |seed: u64, epoch: u64| -> Vec<String> {
        let mut c = config(dir.path(), "shard-{00..03}.tar", 4);
        c.seed = seed;
        collect(c, epoch).into_iter().flat_map(|b| b.0).collect()
    };
    assert_eq!(order(1, 0), order(1, 0));
    assert_ne!(order(1, 0), order(1, 1));
    assert_ne!(order(1, 0), order(2, 0));
    let mut unshuffled = config(dir.path(), "shard-{00..03}.tar", 4);
    unshuffled.shuffle_buffer = 0;
    let texts: Vec<String> = collect(unshuffled, 0)
        .into_iter()
        .flat_map(|b| b.0)
        .collect();
    assert_eq!(
        texts,
        (0..24).map(|i| format!("caption {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn resampled_epochs_are_endless_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 3, 4);
    let take = |epoch: u64| -> Vec<String> {
        let mut c = config(dir.path(), "shard-{00..02}.tar", 5);
        c.resampled = true;
        c.seed = 9;
        // 12 samples exist; 40 batches of 5 need many draws with replacement.
        Loader::new(c, epoch)
            .unwrap()
            .take(40)
            .flat_map(|b| b.unwrap().texts)
            .collect()
    };
    let a = take(0);
    assert_eq!(a.len(), 200);
    assert_eq!(a, take(0));
    assert_ne!(a, take(1));
}

#[test]
fn samples_per_epoch_gives_an_exact_batch_count_across_passes() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 2, 5);
    let mut c = config(dir.path(), "shard-{00..01}.tar", 4);
    c.samples_per_epoch = Some(27);
    let loader = Loader::new(c, 0).unwrap();
    assert_eq!(loader.batches_per_epoch(), Some(6));
    let texts: Vec<String> = loader.flat_map(|b| b.unwrap().texts).collect();
    assert_eq!(texts.len(), 24);
}

#[test]
fn resuming_skips_exactly_the_consumed_batches() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 3, 6);
    let mut c = config(dir.path(), "shard-{00..02}.tar", 4);
    c.samples_per_epoch = Some(40);
    let full = collect(c.clone(), 2);
    let tail: Vec<_> = Loader::resume(c, 2, 3)
        .unwrap()
        .map(|b| b.unwrap())
        .map(|b| (b.texts, b.images, b.tokens))
        .collect();
    assert_eq!(full.len(), 10);
    assert!(same_batches(&full[3..], &tail));
}

#[test]
fn pipe_sources_read_a_command_output() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 2, 3);
    let mut c = config(dir.path(), "pipe:cat shard-{00..01}.tar", 2);
    c.shuffle_buffer = 0;
    c.drop_last = false;
    let texts: Vec<String> = collect(c, 0).into_iter().flat_map(|b| b.0).collect();
    assert_eq!(
        texts,
        (0..6).map(|i| format!("caption {i}")).collect::<Vec<_>>()
    );
}

#[test]
fn a_failing_pipe_command_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), "pipe:cat no-such.tar", 2);
    let mut loader = Loader::new(c, 0).unwrap();
    let err = loader.next().unwrap().unwrap_err();
    assert!(matches!(err, DataError::Pipe { .. }), "{err}");
    assert!(err.to_string().contains("cat no-such.tar"), "{err}");
    assert!(loader.next().is_none());
}

#[test]
fn dropping_a_loader_never_waits_for_a_silent_pipe_command() {
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new(config(dir.path(), "pipe:sleep 5", 2), 0).unwrap();
    let start = std::time::Instant::now();
    drop(loader);
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
}

#[test]
fn a_missing_shard_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 2, 3);
    let err = Loader::new(config(dir.path(), "shard-{00..02}.tar", 2), 0)
        .err()
        .expect("missing shard must fail");
    assert!(matches!(err, DataError::MissingShard(_)));
    assert!(err.to_string().contains("shard-02.tar"), "{err}");
}

#[test]
fn corrupt_samples_are_skipped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("bad.tar")).unwrap();
    let mut builder = tar::Builder::new(file);
    for i in 0..6 {
        let key = format!("{i:03}");
        match i {
            1 => add(&mut builder, &format!("{key}.png"), b"not a png at all"),
            3 => {} // caption only: no image
            _ => add(&mut builder, &format!("{key}.png"), &png(i, 20, 20)),
        }
        add(
            &mut builder,
            &format!("{key}.txt"),
            format!("caption {i}").as_bytes(),
        );
    }
    builder.finish().unwrap();
    drop(builder);
    let mut c = config(dir.path(), "bad.tar", 2);
    c.shuffle_buffer = 0;
    let loader = Loader::new(c, 0).unwrap();
    let stats = loader.stats();
    let texts: Vec<String> = loader.flat_map(|b| b.unwrap().texts).collect();
    assert_eq!(texts, ["caption 0", "caption 2", "caption 4", "caption 5"]);
    assert_eq!(stats.corrupt(), 2);
    assert_eq!(stats.samples(), 4);
}

#[test]
fn a_truncated_shard_keeps_its_complete_samples() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 1, 4);
    let bytes = std::fs::read(dir.path().join("shard-00.tar")).unwrap();
    // Cut inside the last sample's data.
    std::fs::write(
        dir.path().join("cut.tar"),
        &bytes[..bytes.len() - 1024 - 700],
    )
    .unwrap();
    let mut c = config(dir.path(), "cut.tar", 1);
    c.shuffle_buffer = 0;
    let loader = Loader::new(c, 0).unwrap();
    let stats = loader.stats();
    let mut n = 0;
    for batch in loader {
        batch.unwrap();
        n += 1;
    }
    assert!((2..=3).contains(&n), "{n} samples");
    assert_eq!(stats.corrupt(), 1);
}

#[test]
fn labels_come_from_cls_members() {
    let dir = tempfile::tempdir().unwrap();
    write_shards(dir.path(), 1, 6);
    let mut c = config(dir.path(), "shard-00.tar", 6);
    c.shuffle_buffer = 0;
    c.transform = Transform::Eval;
    let batch = Loader::new(c, 0).unwrap().next().unwrap().unwrap();
    assert_eq!(batch.labels.unwrap(), [0, 1, 2, 0, 1, 2]);
}

#[test]
fn images_are_clip_normalised() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::create(dir.path().join("white.tar")).unwrap();
    let mut builder = tar::Builder::new(file);
    let white = image::RgbImage::from_pixel(32, 32, image::Rgb([255, 255, 255]));
    let mut bytes = std::io::Cursor::new(Vec::new());
    white.write_to(&mut bytes, image::ImageFormat::Png).unwrap();
    add(&mut builder, "a.png", bytes.get_ref());
    add(&mut builder, "a.txt", b"white");
    builder.finish().unwrap();
    drop(builder);
    let mut c = config(dir.path(), "white.tar", 1);
    c.transform = Transform::Eval;
    let batch = Loader::new(c, 0).unwrap().next().unwrap().unwrap();
    // Channel 0 (red) of the one image: the first side x side values.
    let side = batch.image_size;
    assert_eq!(batch.images.len(), 3 * side * side);
    let red = batch.images[..side * side]
        .iter()
        .map(|&v| f64::from(v))
        .sum::<f64>()
        / (side * side) as f64;
    assert!(
        (red - (1.0 - 0.48145466) / 0.26862954).abs() < 1e-4,
        "{red}"
    );
}
