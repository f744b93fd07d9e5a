//! The threaded, deterministic batch loader.
//!
//! Threads: one reader (shard order, tar reading, shuffle buffer, numbering), `workers`
//! decoders (image decode + transform + tokenize), one collector (restores number
//! order, skips corrupt samples, builds batch tensors). Channels between them are
//! bounded, so memory stays bounded and the pipeline runs at most `prefetch` batches
//! ahead of the consumer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use rand::seq::SliceRandom;
use rand::Rng;

use super::shards::{parse_shards, ShardReader, ShardSource};
use super::webdataset::{read_samples, RawSample};
use super::{rng, Batch, DataError, LoaderConfig};

/// Counters of a running loader, shared with its threads.
#[derive(Debug, Default)]
pub struct LoaderStats {
    samples: AtomicU64,
    corrupt: AtomicU64,
    batches: AtomicU64,
}

impl LoaderStats {
    /// Samples delivered in batches so far (skipped ones on resume not included).
    pub fn samples(&self) -> u64 {
        self.samples.load(Ordering::Relaxed)
    }
    /// Samples skipped because they could not be used (bad image, missing members,
    /// unreadable tar tail).
    pub fn corrupt(&self) -> u64 {
        self.corrupt.load(Ordering::Relaxed)
    }
    /// Batches delivered so far.
    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }
}

/// Work items from the reader, numbered in emission order.
enum Job {
    Sample(RawSample),
    /// End of one pass over the shard list.
    PassEnd,
    /// The reader failed; the loader reports this error when it reaches this number.
    Fail(DataError),
}

/// A decoded sample, or why it was dropped.
enum Decoded {
    Sample(Box<Ready>),
    /// Decoded only to check it is valid: a resumed loader discards it.
    Skipped,
    Corrupt {
        key: String,
        reason: String,
    },
    PassEnd,
    Fail(DataError),
}

struct Ready {
    image: Vec<f32>,
    tokens: Vec<i64>,
    label: Option<i64>,
    key: String,
    text: String,
}

/// Iterator over [`Batch`]es of one epoch; see the module docs of [`crate::data`].
///
/// Yields `Err` once (then ends) if a shard cannot be read, a `pipe:` command fails,
/// or a whole pass over the data contained no usable sample.
pub struct Loader {
    batches: Option<Receiver<Result<Batch, DataError>>>,
    stats: Arc<LoaderStats>,
    stop: Arc<AtomicBool>,
    batches_per_epoch: Option<u64>,
}

impl Loader {
    /// Starts loading epoch `epoch` from its first batch.
    pub fn new(config: LoaderConfig, epoch: u64) -> Result<Self, DataError> {
        Self::resume(config, epoch, 0)
    }

    /// Starts loading epoch `epoch`, skipping its first `skip_batches` batches: the
    /// batches yielded are exactly those an uninterrupted [`Loader::new`] yields after
    /// its first `skip_batches`. Skipped samples are decoded (to know which are corrupt)
    /// but not augmented.
    pub fn resume(config: LoaderConfig, epoch: u64, skip_batches: u64) -> Result<Self, DataError> {
        config.validate()?;
        let sources = parse_shards(&config.shards, &config.base_dir)?;
        let config = Arc::new(config);
        let stats = Arc::new(LoaderStats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let workers = config.workers.max(1);
        let batches_per_epoch = config
            .samples_per_epoch
            .map(|n| n / config.batch_size as u64);
        let skip_samples = skip_batches * config.batch_size as u64;

        let (job_tx, job_rx) = bounded::<(u64, Job)>(workers * 4 + config.batch_size);
        let (done_tx, done_rx) = bounded::<(u64, Decoded)>(workers * 4 + config.batch_size);
        let (batch_tx, batch_rx) = bounded::<Result<Batch, DataError>>(config.prefetch.max(1));

        {
            let (config, stats, stop) = (config.clone(), stats.clone(), stop.clone());
            spawn("tureen-data-reader", move || {
                read_loop(&config, &sources, epoch, &stats, &stop, job_tx)
            });
        }
        for i in 0..workers {
            let (config, job_rx, done_tx, stop) = (
                config.clone(),
                job_rx.clone(),
                done_tx.clone(),
                stop.clone(),
            );
            spawn(&format!("tureen-data-decode-{i}"), move || {
                decode_loop(&config, epoch, skip_samples, &job_rx, &done_tx, &stop)
            });
        }
        drop((job_rx, done_tx));
        {
            let (config, stats, stop) = (config.clone(), stats.clone(), stop.clone());
            let limit = batches_per_epoch.map(|n| n.saturating_sub(skip_batches));
            spawn("tureen-data-collect", move || {
                collect_loop(
                    &config,
                    skip_samples,
                    limit,
                    &done_rx,
                    &batch_tx,
                    &stats,
                    &stop,
                )
            });
        }
        Ok(Loader {
            batches: Some(batch_rx),
            stats,
            stop,
            batches_per_epoch,
        })
    }

    /// Live counters (delivered samples, corrupt samples, batches).
    pub fn stats(&self) -> Arc<LoaderStats> {
        self.stats.clone()
    }

    /// Batches in this epoch when `samples_per_epoch` is set.
    pub fn batches_per_epoch(&self) -> Option<u64> {
        self.batches_per_epoch
    }
}

/// Starts a detached, named loader thread.
fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(f)
        .expect("spawning a data loader thread");
}

impl Iterator for Loader {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.batches.as_ref()?.recv().ok()?;
        if item.is_err() {
            self.batches = None;
        }
        Some(item)
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Closing the batch channel unblocks the collector, whose exit closes the
        // workers' channel, and so on up to the reader (which kills a `pipe:` command
        // when it stops). The threads are not joined: a reader blocked on a command
        // that never writes must not hang the consumer; every thread exits as soon as
        // it is unblocked.
        self.batches = None;
    }
}

/// The reader: walks passes over the shards and feeds the shuffle buffer.
fn read_loop(
    config: &LoaderConfig,
    sources: &[ShardSource],
    epoch: u64,
    stats: &LoaderStats,
    stop: &AtomicBool,
    jobs: Sender<(u64, Job)>,
) {
    let mut number = 0u64;
    let mut send = |job: Job| -> bool {
        let ok = !stop.load(Ordering::Relaxed) && jobs.send((number, job)).is_ok();
        number += 1;
        ok
    };
    let endless_passes = config.samples_per_epoch.is_some() && !config.resampled;
    let mut pass = 0u64;
    loop {
        let mut shard_rng = rng::stream(config.seed, &[rng::SHARDS, epoch, pass]);
        let mut buffer = ShuffleBuffer::new(
            config.shuffle_buffer,
            rng::stream(config.seed, &[rng::BUFFER, epoch, pass]),
        );
        let mut order: Vec<usize> = (0..sources.len()).collect();
        if config.shuffle_buffer > 0 && !config.resampled {
            order.shuffle(&mut shard_rng);
        }
        let mut usable = 0u64;
        let mut shard_index = 0usize;
        // Resampling never ends a pass: give up if many draws in a row yield nothing.
        let mut barren_draws = 0usize;
        loop {
            if config.resampled && barren_draws >= 4 * sources.len() + 16 {
                send(Job::Fail(DataError::Empty(config.shards.clone())));
                return;
            }
            let usable_before = usable;
            let source = if config.resampled {
                &sources[shard_rng.gen_range(0..sources.len())]
            } else if let Some(&i) = order.get(shard_index) {
                &sources[i]
            } else {
                break;
            };
            shard_index += 1;
            let mut keep_going = true;
            let result = read_shard(config, source, stats, |sample| {
                usable += 1;
                if let Some(out) = buffer.push(sample) {
                    keep_going = send(Job::Sample(out));
                }
                keep_going
            });
            if let Err(err) = result {
                send(Job::Fail(err));
                return;
            }
            if !keep_going {
                return;
            }
            barren_draws = if usable == usable_before {
                barren_draws + 1
            } else {
                0
            };
        }
        for sample in buffer.drain() {
            if !send(Job::Sample(sample)) {
                return;
            }
        }
        if usable == 0 {
            send(Job::Fail(DataError::Empty(format!(
                "pass {pass} over {}",
                config.shards
            ))));
            return;
        }
        if !send(Job::PassEnd) || !endless_passes {
            return;
        }
        pass += 1;
    }
}

/// Reads one shard, handing every usable sample to `emit` (which returns `false` to
/// stop). Samples missing members and unreadable tar tails are counted as corrupt.
fn read_shard(
    config: &LoaderConfig,
    source: &ShardSource,
    stats: &LoaderStats,
    mut emit: impl FnMut(RawSample) -> bool,
) -> Result<(), DataError> {
    let name = match source {
        ShardSource::File(path) => path
            .strip_prefix(&config.base_dir)
            .unwrap_or(path)
            .display()
            .to_string(),
        ShardSource::Pipe(command) => format!("pipe:{command}"),
    };
    let mut reader = ShardReader::open(source, &config.base_dir)?;
    let mut stopped = false;
    let result = read_samples(&name, &mut reader, |sample| {
        if let Some(problem) = sample.problem() {
            stats.corrupt.fetch_add(1, Ordering::Relaxed);
            tracing::warn!("skipping corrupt sample {}: {problem}", sample.key);
            return true;
        }
        let go_on = emit(sample);
        stopped = !go_on;
        go_on
    });
    if let Err((complete, err)) = result {
        stats.corrupt.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "shard {name}: unreadable after {complete} samples, skipping the rest: {err}"
        );
        return Ok(());
    }
    if stopped {
        return Ok(()); // dropping the reader kills a pipe command
    }
    reader.finish()
}

/// webdataset's shuffle: a buffer of `capacity` samples; each new sample replaces a
/// uniformly chosen one, which is emitted. Capacity 0 passes samples through.
struct ShuffleBuffer {
    capacity: usize,
    items: Vec<RawSample>,
    rng: rand_chacha::ChaCha8Rng,
}

impl ShuffleBuffer {
    fn new(capacity: usize, rng: rand_chacha::ChaCha8Rng) -> Self {
        ShuffleBuffer {
            capacity,
            items: Vec::with_capacity(capacity.min(1 << 16)),
            rng,
        }
    }

    fn push(&mut self, sample: RawSample) -> Option<RawSample> {
        if self.capacity == 0 {
            return Some(sample);
        }
        if self.items.len() < self.capacity {
            self.items.push(sample);
            return None;
        }
        let k = self.rng.gen_range(0..self.items.len());
        Some(std::mem::replace(&mut self.items[k], sample))
    }

    fn drain(mut self) -> impl Iterator<Item = RawSample> {
        self.items.shuffle(&mut self.rng);
        self.items.into_iter()
    }
}

/// One decode thread: decodes the numbered jobs it receives and sends them back
/// numbered, until the jobs run out, the receiver hangs up or `stop` is set.
fn decode_loop(
    config: &LoaderConfig,
    epoch: u64,
    skip_samples: u64,
    jobs: &Receiver<(u64, Job)>,
    done: &Sender<(u64, Decoded)>,
    stop: &AtomicBool,
) {
    for (number, job) in jobs.iter() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let decoded = match job {
            Job::Sample(sample) => decode(config, epoch, number, number < skip_samples, sample),
            Job::PassEnd => Decoded::PassEnd,
            Job::Fail(err) => Decoded::Fail(err),
        };
        if done.send((number, decoded)).is_err() {
            return;
        }
    }
}

fn decode(
    config: &LoaderConfig,
    epoch: u64,
    number: u64,
    skip: bool,
    sample: RawSample,
) -> Decoded {
    let corrupt = |reason: String| Decoded::Corrupt {
        key: sample.key.clone(),
        reason,
    };
    let image_bytes = sample
        .image()
        .expect("reader only emits samples with an image");
    let text = match sample.text() {
        Some(Ok(text)) => text.trim().to_string(),
        Some(Err(e)) => return corrupt(format!("caption is not UTF-8: {e}")),
        None => String::new(),
    };
    let label = match sample.files.get("cls") {
        None => None,
        Some(bytes) => match std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
        {
            Some(label) => Some(label),
            None => return corrupt("`.cls` is not an integer".into()),
        },
    };
    let image = match image::load_from_memory(image_bytes) {
        Ok(image) => image.into_rgb8(),
        Err(e) => return corrupt(format!("cannot decode image: {e}")),
    };
    if image.width() == 0 || image.height() == 0 {
        return corrupt("empty image".into());
    }
    if skip {
        return Decoded::Skipped;
    }
    let mut sample_rng = rng::stream(config.seed, &[rng::SAMPLE, epoch, number]);
    let pixels = config
        .transform
        .apply(&image, config.image_size, &mut sample_rng);
    let tokens = config.tokenizer.encode(&text, config.context_length);
    Decoded::Sample(Box::new(Ready {
        image: pixels,
        tokens,
        label,
        key: sample.key,
        text,
    }))
}

/// The collector: restores order, drops corrupt/skipped samples, builds batches.
fn collect_loop(
    config: &LoaderConfig,
    skip_samples: u64,
    limit: Option<u64>,
    done: &Receiver<(u64, Decoded)>,
    batches: &Sender<Result<Batch, DataError>>,
    stats: &LoaderStats,
    stop: &AtomicBool,
) {
    if limit == Some(0) {
        return;
    }
    let mut pending: BTreeMap<u64, Decoded> = BTreeMap::new();
    let mut next = 0u64;
    let mut skipped = 0u64;
    let mut current: Vec<Ready> = Vec::with_capacity(config.batch_size);
    let mut delivered = 0u64;
    // Usable samples since the last pass ended: a pass of only corrupt images must
    // end in an error, not an endless loop over passes.
    let mut usable_in_pass = 0u64;
    let flush = |current: &mut Vec<Ready>, delivered: &mut u64| -> bool {
        let batch = build_batch(std::mem::take(current), config);
        stats
            .samples
            .fetch_add(batch.keys.len() as u64, Ordering::Relaxed);
        stats.batches.fetch_add(1, Ordering::Relaxed);
        *delivered += 1;
        batches.send(Ok(batch)).is_ok() && limit != Some(*delivered)
    };
    for (number, decoded) in done.iter() {
        pending.insert(number, decoded);
        while let Some(decoded) = pending.remove(&next) {
            next += 1;
            match decoded {
                Decoded::Sample(ready) => {
                    usable_in_pass += 1;
                    if skipped < skip_samples {
                        skipped += 1;
                        continue;
                    }
                    current.push(*ready);
                    if current.len() == config.batch_size && !flush(&mut current, &mut delivered) {
                        return;
                    }
                }
                Decoded::Skipped => {
                    usable_in_pass += 1;
                    skipped += 1;
                }
                Decoded::Corrupt { key, reason } => {
                    stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("skipping corrupt sample {key}: {reason}");
                }
                Decoded::PassEnd => {
                    if usable_in_pass == 0 {
                        let _ = batches.send(Err(DataError::Empty(config.shards.clone())));
                        return;
                    }
                    usable_in_pass = 0;
                    let single_pass = limit.is_none();
                    if single_pass
                        && !config.drop_last
                        && !current.is_empty()
                        && !flush(&mut current, &mut delivered)
                    {
                        return;
                    }
                }
                Decoded::Fail(err) => {
                    let _ = batches.send(Err(err));
                    return;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

fn build_batch(samples: Vec<Ready>, config: &LoaderConfig) -> Batch {
    let size = config.image_size as usize;
    let mut images = Vec::with_capacity(samples.len() * 3 * size * size);
    let mut tokens = Vec::with_capacity(samples.len() * config.context_length);
    let mut labels = Vec::with_capacity(samples.len());
    let mut keys = Vec::with_capacity(samples.len());
    let mut texts = Vec::with_capacity(samples.len());
    for sample in samples {
        images.extend_from_slice(&sample.image);
        tokens.extend_from_slice(&sample.tokens);
        labels.push(sample.label);
        keys.push(sample.key);
        texts.push(sample.text);
    }
    Batch {
        images,
        image_size: size,
        tokens,
        context_length: config.context_length,
        labels: labels.into_iter().collect(),
        keys,
        texts,
    }
}
