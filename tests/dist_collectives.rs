//! The c10d layer (`tureen_torch::dist`) on gloo, two ranks as two threads of this test:
//! each collective's values, bucketed gradient sums, and how failures are reported
//! (a peer that stops, one that never comes, ranks started with different jobs).

use std::time::{Duration, Instant};

use tch::{Device, Kind, Tensor};
use tureen_torch::dist::{
    Backend, DistError, GradBuckets, GroupOptions, Op, Peer, ProcessGroup, Rank, Rendezvous,
    StoreAddress,
};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn options(identity: &str, timeout: Duration) -> GroupOptions {
    GroupOptions {
        backend: Backend::Gloo,
        device: Device::Cpu,
        timeout,
        rendezvous_timeout: Duration::from_secs(20),
        identity: identity.into(),
        interface: None,
    }
}

fn rendezvous(rank: u32, world: u32, port: u16) -> Rendezvous {
    Rendezvous {
        rank: Rank {
            rank,
            world,
            local: rank,
        },
        store: StoreAddress::Tcp {
            host: "127.0.0.1".into(),
            port,
        },
    }
}

/// Runs `body` as every rank of a `world`-rank group, one thread each.
fn with_ranks<T: Send>(
    world: u32,
    identity: impl Fn(u32) -> String + Sync,
    body: impl Fn(Result<ProcessGroup, DistError>) -> T + Sync,
) -> Vec<T> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|r| {
                let (identity, body) = (&identity, &body);
                s.spawn(move || {
                    let opts = options(&identity(r), Duration::from_secs(10));
                    body(ProcessGroup::join(
                        &rendezvous(r, world, port),
                        &opts,
                        &|| false,
                    ))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn values(t: &Tensor) -> Vec<f32> {
    Vec::<f32>::try_from(&t.reshape([-1])).unwrap()
}

#[test]
fn collectives_sum_gather_scatter_and_broadcast_across_ranks() {
    let results = with_ranks(
        2,
        |_| "job".into(),
        |group| {
            let g = group.unwrap();
            let r = g.rank().rank as f32;
            let t = Tensor::from_slice(&[1.0 + r, 10.0 * (r + 1.0)]);
            g.all_reduce_sum(&[&t]).unwrap();
            let gathered = g.all_gather(&Tensor::from_slice(&[r, r + 0.5])).unwrap();
            let scattered = g
                .reduce_scatter_sum(&Tensor::from_slice(&[1.0f32, 2.0, 3.0, 4.0]).view([2, 2]))
                .unwrap();
            let b = Tensor::from_slice(&[r + 7.0]);
            g.broadcast(&b, 1).unwrap();
            g.barrier().unwrap();
            let agreed = g.all_gather_i64(&[g.rank().rank as i64 * 3]).unwrap();
            (
                values(&t),
                values(&gathered),
                values(&scattered),
                values(&b),
                agreed,
            )
        },
    );
    for (rank, (sum, gathered, scattered, b, agreed)) in results.into_iter().enumerate() {
        assert_eq!(sum, vec![3.0, 30.0]);
        assert_eq!(gathered, vec![0.0, 0.5, 1.0, 1.5]);
        // Rank r gets row r of the sum of [[1, 2], [3, 4]] over two ranks.
        let row = if rank == 0 {
            vec![2.0, 4.0]
        } else {
            vec![6.0, 8.0]
        };
        assert_eq!(scattered, row);
        assert_eq!(b, vec![8.0], "rank 1's value everywhere");
        assert_eq!(agreed, vec![0, 3]);
    }
}

#[test]
fn gradient_buckets_sum_every_gradient_and_the_extras() {
    let results = with_ranks(
        2,
        |_| "job".into(),
        |group| {
            let g = group.unwrap();
            let r = g.rank().rank as f64;
            let grads: Vec<Tensor> = (0..5)
                .map(|i| Tensor::full([3, i + 1], r + i as f64, (Kind::Float, Device::Cpu)))
                .collect();
            // 16 bytes per bucket: several buckets, one gradient larger than a bucket.
            let mut buckets = GradBuckets::new(&grads, 2, 16).unwrap();
            let extras = buckets.all_reduce(&g, &grads, &[r + 0.25, 1.0]).unwrap();
            let sums: Vec<Vec<f32>> = grads.iter().map(values).collect();
            (sums, extras)
        },
    );
    for (sums, extras) in results {
        for (i, s) in sums.iter().enumerate() {
            assert_eq!(s.len(), 3 * (i + 1));
            assert!(
                s.iter().all(|&v| v == (2 * i + 1) as f32),
                "gradient {i}: {s:?}"
            );
        }
        assert_eq!(extras, vec![1.5, 2.0]);
    }
}

#[test]
fn a_peer_that_stops_fails_the_next_collective_naming_it() {
    let results = with_ranks(
        2,
        |_| "job".into(),
        |group| {
            let g = group.unwrap();
            g.barrier().unwrap();
            if g.rank().rank == 1 {
                drop(g); // closes its connections and ends its heartbeat
                return None;
            }
            let start = Instant::now();
            let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
            let err = g.all_reduce_sum(&[&t]).unwrap_err();
            Some((err, start.elapsed()))
        },
    );
    let (err, took) = results.into_iter().flatten().next().unwrap();
    let text = err.to_string();
    match &err {
        DistError::Failed { op, rank, peer, .. } => {
            assert_eq!(*op, Op::AllReduce);
            assert_eq!(rank.rank, 0);
            assert_eq!(*peer, Peer::Stopped(vec![1]), "{text}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(text.contains("all-reduce failed on rank 0 of 2"), "{text}");
    assert!(text.contains("peer rank 1 has stopped"), "{text}");
    // Well inside the 10 s collective timeout (the diagnosis takes a few heartbeats).
    assert!(took < Duration::from_secs(9), "took {took:?}");
}

#[test]
fn when_rank_0_stops_the_others_name_it_as_the_store_host() {
    let results = with_ranks(
        2,
        |_| "job".into(),
        |group| {
            let g = group.unwrap();
            g.barrier().unwrap();
            if g.rank().rank == 0 {
                drop(g); // its store goes with it
                return None;
            }
            let t = Tensor::ones([4], (Kind::Float, Device::Cpu));
            Some(g.all_reduce_sum(&[&t]).unwrap_err())
        },
    );
    let err = results.into_iter().flatten().next().unwrap();
    match &err {
        DistError::Failed { rank, peer, .. } => {
            assert_eq!(rank.rank, 1);
            assert_eq!(*peer, Peer::StoreHost, "{err}");
        }
        other => panic!("unexpected error: {other}"),
    }
    assert!(
        err.to_string()
            .contains("peer rank 0, which serves the rendezvous store"),
        "{err}"
    );
}

#[test]
fn a_rank_that_never_comes_fails_the_rendezvous_in_bounded_time() {
    let port = free_port();
    let mut opts = options("job", Duration::from_secs(5));
    opts.rendezvous_timeout = Duration::from_secs(2);
    let start = Instant::now();
    // Rank 1 with no rank 0 serving the store.
    let err = ProcessGroup::join(&rendezvous(1, 2, port), &opts, &|| false)
        .err()
        .expect("no rank 0");
    let text = err.to_string();
    assert!(text.contains("rank 1 of 2"), "{text}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(text.contains("MASTER_ADDR"), "{text}");
    assert!(
        start.elapsed() < Duration::from_secs(8),
        "{:?}",
        start.elapsed()
    );
    // Rank 0 alone: serves, and names the rank that did not arrive.
    let err = ProcessGroup::join(&rendezvous(0, 2, port), &opts, &|| false)
        .err()
        .expect("no rank 1");
    assert!(err.to_string().contains("missing: rank 1"), "{err}");
}

#[test]
fn ranks_started_with_different_jobs_are_refused() {
    let results = with_ranks(
        2,
        |r| format!("key-{r}"),
        |group| group.err().map(|e| e.to_string()),
    );
    let rank1 = results[1].as_ref().expect("rank 1 refuses");
    assert!(rank1.contains("rank 0 runs `key-0`"), "{rank1}");
    let rank0 = results[0].as_ref().expect("rank 0 refuses");
    assert!(rank0.contains("rank 1 runs `key-1`"), "{rank0}");
}
