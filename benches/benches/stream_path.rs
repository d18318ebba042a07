//! The stream write/read path through STOQ's traits (`SendStream`/`RecvStream` on the
//! quinn backend) versus quinn's own streams, on an in-process loopback connection with
//! the same configuration: 1 MiB per iteration in 64 KiB writes, read concurrently at the
//! receiver. Two API styles: copying (`write_all`/`read`) and chunks (`write_chunk`/
//! `read_chunk`, no copy where the engine allows).

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stoq_bench::{bench_config, quinn_direct};
use stoq_core::{Backend, EndpointSpec};

const WRITE: usize = 64 * 1024;
const PER_ITER: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

struct StoqPair {
    send: stoq_core::SendStream,
    recv: stoq_core::RecvStream,
    _keep: Vec<Arc<dyn std::any::Any + Send + Sync>>,
    _conns: (stoq_core::ConnectionHandle, stoq_core::ConnectionHandle),
}

async fn stoq_pair() -> StoqPair {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let backend = stoq_quinn::QuinnBackend;
    let server = backend
        .bind(EndpointSpec::server(
            "[::1]:0".parse().unwrap(),
            bench_config(),
            tls.clone(),
        ))
        .unwrap();
    let addr = server.local_addr().unwrap();
    let client = backend
        .bind(EndpointSpec::client(addr, bench_config(), tls))
        .unwrap();
    let (cc, sc) = tokio::join!(client.connect(addr, "localhost"), server.accept());
    let (cc, sc) = (cc.unwrap(), sc.unwrap());
    let (mut send, _unused_recv) = cc.open_bi().await.unwrap();
    send.write_all(&[0]).await.unwrap();
    let (_unused_send, mut recv) = sc.accept_bi().await.unwrap();
    let mut one = [0u8; 1];
    assert_eq!(recv.read(&mut one).await.unwrap(), 1);
    std::mem::forget((_unused_recv, _unused_send));
    StoqPair {
        send,
        recv,
        _keep: vec![Arc::new(server), Arc::new(client)],
        _conns: (cc, sc),
    }
}

struct QuinnPair {
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    _keep: (
        quinn::Endpoint,
        quinn::Endpoint,
        quinn::Connection,
        quinn::Connection,
    ),
}

async fn quinn_pair() -> QuinnPair {
    let tls = stoq_crypto::ephemeral_material(&["localhost"]).unwrap();
    let cfg = bench_config();
    let server = quinn_direct::endpoint(
        "[::1]:0".parse().unwrap(),
        &cfg,
        Some(quinn_direct::server_config(&tls, &cfg).unwrap()),
    )
    .unwrap();
    let addr = server.local_addr().unwrap();
    let mut client = quinn_direct::endpoint("[::]:0".parse().unwrap(), &cfg, None).unwrap();
    client.set_default_client_config(quinn_direct::client_config(&tls, &cfg).unwrap());
    let connecting = client.connect(addr, "localhost").unwrap();
    let (cc, sc) = tokio::join!(connecting, async { server.accept().await.unwrap().await });
    let (cc, sc) = (cc.unwrap(), sc.unwrap());
    let (mut send, _unused_recv) = cc.open_bi().await.unwrap();
    send.write_all(&[0]).await.unwrap();
    let (_unused_send, mut recv) = sc.accept_bi().await.unwrap();
    let mut one = [0u8; 1];
    assert_eq!(recv.read(&mut one).await.unwrap(), Some(1));
    std::mem::forget((_unused_recv, _unused_send));
    QuinnPair {
        send,
        recv,
        _keep: (server, client, cc, sc),
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let payload = vec![0x5au8; WRITE];
    let chunk = Bytes::from(payload.clone());

    let mut g = c.benchmark_group("stream_path/copy_64KiB_writes");
    g.throughput(Throughput::Bytes(PER_ITER as u64));
    g.measurement_time(Duration::from_secs(4));
    let mut p = rt.block_on(stoq_pair());
    g.bench_function("stoq-quinn", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut buf = vec![0u8; WRITE];
                let t = Instant::now();
                for _ in 0..iters {
                    let write = async {
                        for _ in 0..PER_ITER / WRITE {
                            p.send.write_all(&payload).await.unwrap();
                        }
                    };
                    let read = async {
                        let mut got = 0;
                        while got < PER_ITER {
                            got += p.recv.read(&mut buf).await.unwrap();
                        }
                    };
                    tokio::join!(write, read);
                }
                t.elapsed()
            })
        })
    });
    let mut q = rt.block_on(quinn_pair());
    g.bench_function("quinn-direct", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut buf = vec![0u8; WRITE];
                let t = Instant::now();
                for _ in 0..iters {
                    let write = async {
                        for _ in 0..PER_ITER / WRITE {
                            q.send.write_all(&payload).await.unwrap();
                        }
                    };
                    let read = async {
                        let mut got = 0;
                        while got < PER_ITER {
                            got += q.recv.read(&mut buf).await.unwrap().unwrap();
                        }
                    };
                    tokio::join!(write, read);
                }
                t.elapsed()
            })
        })
    });
    g.finish();

    let mut g = c.benchmark_group("stream_path/chunk_64KiB_writes");
    g.throughput(Throughput::Bytes(PER_ITER as u64));
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("stoq-quinn", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let write = async {
                        for _ in 0..PER_ITER / WRITE {
                            p.send.write_chunk(chunk.clone()).await.unwrap();
                        }
                    };
                    let read = async {
                        let mut got = 0;
                        while got < PER_ITER {
                            got += p.recv.read_chunk(usize::MAX).await.unwrap().unwrap().len();
                        }
                    };
                    tokio::join!(write, read);
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("quinn-direct", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let t = Instant::now();
                for _ in 0..iters {
                    let write = async {
                        for _ in 0..PER_ITER / WRITE {
                            q.send.write_chunk(chunk.clone()).await.unwrap();
                        }
                    };
                    let read = async {
                        let mut got = 0;
                        while got < PER_ITER {
                            got += q
                                .recv
                                .read_chunk(usize::MAX, true)
                                .await
                                .unwrap()
                                .unwrap()
                                .bytes
                                .len();
                        }
                    };
                    tokio::join!(write, read);
                }
                t.elapsed()
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
