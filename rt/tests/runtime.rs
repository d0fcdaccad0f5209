//! The runtime as its users drive it: tasks, timers, wakes from other threads, TCP
//! and files, each checked for the exact outcome.

use ampd_rt::executor::Runtime;
use ampd_rt::net::{TcpListener, TcpStream};
use ampd_rt::{spawn, time, Config};
use bytes::BytesMut;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

fn runtime() -> Runtime {
    Runtime::new(Config::default()).expect("a runtime (io_uring available)")
}

#[test]
fn tasks_run_and_hand_back_their_output_in_spawn_order() {
    let rt = runtime();
    let got = rt.block_on(async {
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let order = order.clone();
                spawn(async move {
                    order.borrow_mut().push(i);
                    i * 10
                })
            })
            .collect();
        let mut outputs = Vec::new();
        for h in handles {
            outputs.push(h.await);
        }
        let order = order.borrow().clone();
        (outputs, order)
    });
    assert_eq!(got.0, [Some(0), Some(10), Some(20), Some(30), Some(40)]);
    assert_eq!(got.1, [0, 1, 2, 3, 4]);
}

#[test]
fn a_cancelled_task_ends_without_output_and_a_sleep_waits_its_time() {
    let rt = runtime();
    rt.block_on(async {
        let never = spawn(async {
            time::sleep(Duration::from_secs(3600)).await;
            1
        });
        never.cancel();
        assert_eq!(never.await, None);

        let started = Instant::now();
        time::sleep(Duration::from_millis(30)).await;
        assert!(started.elapsed() >= Duration::from_millis(30));
    });
}

#[test]
fn timers_fire_in_deadline_order() {
    let rt = runtime();
    let order = rt.block_on(async {
        let order = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let handles: Vec<_> = [40u64, 10, 30, 20]
            .into_iter()
            .map(|ms| {
                let order = order.clone();
                spawn(async move {
                    time::sleep(Duration::from_millis(ms)).await;
                    order.borrow_mut().push(ms);
                })
            })
            .collect();
        for h in handles {
            h.await;
        }
        let order = order.borrow().clone();
        order
    });
    assert_eq!(order, [10, 20, 30, 40]);
}

#[test]
fn another_thread_wakes_a_sleeping_runtime() {
    let rt = runtime();
    let got = rt.block_on(async {
        let mut replies = Vec::new();
        for i in 0..200u32 {
            let (tx, rx) = futures::channel::oneshot::channel();
            std::thread::spawn(move || {
                if i % 2 == 0 {
                    std::thread::sleep(Duration::from_micros(200));
                }
                let _ = tx.send(i);
            });
            replies.push(rx.await.expect("the thread answers"));
        }
        replies
    });
    assert_eq!(got, (0..200).collect::<Vec<_>>());
}

#[test]
fn tcp_echo_with_reads_that_survive_a_lost_select() {
    let rt = runtime();
    rt.block_on(async {
        let mut listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            for round in 0..50u32 {
                let msg = format!("message {round}\n");
                s.write_all(msg.as_bytes()).unwrap();
                let mut back = vec![0; msg.len()];
                s.read_exact(&mut back).unwrap();
                assert_eq!(back, msg.as_bytes());
            }
            // A large message, more than one read buffer.
            let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
            s.write_all(&big).unwrap();
            let mut back = vec![0; big.len()];
            s.read_exact(&mut back).unwrap();
            assert_eq!(back, big);
        });
        let mut stream: TcpStream = listener.accept().await.unwrap();
        stream.set_nodelay(true).unwrap();
        let mut input = BytesMut::new();
        let mut total = 0;
        let expected: usize = (0..50u32)
            .map(|r| format!("message {r}\n").len())
            .sum::<usize>()
            + 300_000;
        while total < expected {
            // Race each read against a short timer: the read dropped by the select
            // stays in flight and its bytes come with the next call.
            {
                let read = std::pin::pin!(stream.read_into(&mut input));
                let timer = std::pin::pin!(time::sleep(Duration::from_micros(50)));
                if let futures::future::Either::Left((n, _)) =
                    futures::future::select(read, timer).await
                {
                    let n = n.unwrap();
                    assert!(n > 0, "the peer does not close before its echo");
                }
            }
            if !input.is_empty() {
                total += input.len();
                let out = input.split();
                let (written, _) = stream.write_all(out).await;
                written.unwrap();
            }
        }
        assert_eq!(total, expected);
        client.join().unwrap();
        let mut rest = BytesMut::new();
        assert_eq!(
            stream.read_into(&mut rest).await.unwrap(),
            0,
            "end of stream"
        );
    });
}

#[test]
fn files_write_read_and_sync_on_the_ring() {
    let dir = std::env::temp_dir().join(format!("ampd-rt-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("f");
    let rt = runtime();
    let got = rt.block_on({
        let (path, dir) = (path.clone(), dir.clone());
        async move {
            let file: ampd_rt::fs::File = std::fs::OpenOptions::new()
                .create(true)
                .truncate(true)
                .read(true)
                .write(true)
                .open(&path)
                .unwrap()
                .into();
            let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
            file.write_all_at(10, data.clone()).await.unwrap();
            file.sync_data().await.unwrap();
            ampd_rt::fs::sync_dir(&dir).await.unwrap();
            let back = file.read_at(10, 2_000_000).await.unwrap();
            (back == data, file.read_at(0, 10).await.unwrap())
        }
    });
    assert!(got.0, "the read gives back what was written");
    assert_eq!(
        got.1,
        vec![0; 10],
        "the hole before the write reads as zeros"
    );
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1_000_010);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_coalescing_runtime_still_answers_promptly_when_asked_once() {
    let rt = Runtime::new(Config {
        coalesce: Some(Duration::from_micros(200)),
        ..Config::default()
    })
    .expect("minimum wait (Linux 6.12+)");
    let started = Instant::now();
    rt.block_on(time::sleep(Duration::from_millis(5)));
    // Only a stall exceeds this: the minimum wait is 200 µs.
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn a_thread_runs_its_runtime_and_reports_setup_failures() {
    let t = ampd_rt::thread::Builder::new()
        .name("rt-test")
        .spawn(|| async { spawn(async { 7 }).await })
        .unwrap();
    assert_eq!(t.join().unwrap(), Some(7));
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let bad = ampd_rt::thread::Builder::new()
        .pin_to(cpus + 4096)
        .spawn(|| async {})
        .unwrap();
    let e = bad.join().unwrap_err();
    assert!(e.to_string().contains("cannot pin to CPU"), "{e}");
}
