use std::time::{Duration, Instant};
use lancebranch_wal::*;

fn run(wal: &Wal<Vec<u8>>, writers: usize, slice: Duration) -> (u64, Duration) {
    let rec = vec![7u8; 256];
    let start = Instant::now();
    let deadline = start + slice;
    let n: u64 = std::thread::scope(|s| {
        let hs: Vec<_> = (0..writers).map(|_| { let rec = &rec; s.spawn(move || { let mut n = 0; while Instant::now() < deadline { wal.append(rec).unwrap(); n += 1; } n }) }).collect();
        hs.into_iter().map(|h| h.join().unwrap()).sum()
    });
    (n, start.elapsed())
}

#[test]
fn diag() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (wal, _) = Wal::<Vec<u8>>::open(dir.path(), Options::default()).unwrap();
    let mut t = [(0u64, Duration::ZERO); 4];
    for _ in 0..8 {
        for (i, w) in [1usize, 2, 4, 8].iter().enumerate() {
            let (n, d) = run(&wal, *w, Duration::from_millis(300));
            t[i].0 += n; t[i].1 += d;
        }
    }
    let r: Vec<f64> = t.iter().map(|(n, d)| *n as f64 / d.as_secs_f64()).collect();
    eprintln!("div {:?}: c1 {:.0} c2 {:.0} c4 {:.0} c8 {:.0}  c8/c1 {:.2}", std::env::var("WAL_GATHER_DIV").ok(), r[0], r[1], r[2], r[3], r[3] / r[0]);
}
