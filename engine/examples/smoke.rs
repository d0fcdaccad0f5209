use ampd_engine::*;
use serde_json::json;
fn main() {
    let db = Db::open(Config {
        shards: 2,
        pin: true,
    })
    .unwrap();
    futures::executor::block_on(async {
        let t = std::time::Instant::now();
        db.set("foo", json!("bar"), &SetOptions::default())
            .await
            .unwrap();
        println!("first set {:?}", t.elapsed());
        let t = std::time::Instant::now();
        for i in 0..10000 {
            db.set(&format!("ns:k{i}"), json!(i), &SetOptions::default())
                .await
                .unwrap();
        }
        println!("10k sequential sets {:?}", t.elapsed());
        println!(
            "{}",
            db.get("foo", &QueryOptions::default())
                .unwrap()
                .to_json(false)
        );
        println!(
            "{}",
            db.get("ns:k99*", &QueryOptions::default())
                .unwrap()
                .to_json(false)
        );
    });
}
