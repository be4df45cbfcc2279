//! Test child: opens a store and commits numbered change sets forever, printing
//! `ack N` on stdout only after commit N returned (i.e. after its fsync). The
//! parent kills it with SIGKILL at a random moment and checks what survived.

use std::io::Write;

use storage::{ChangeSet, Family, Store};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("usage: chaos-writer DATA_DIR START"))?;
    let start: u64 = std::env::args()
        .nth(2)
        .unwrap_or_else(|| "0".into())
        .parse()?;
    let store = Store::open(std::path::Path::new(&dir))?;
    let mut stdout = std::io::stdout().lock();
    for n in start.. {
        let mut change = ChangeSet::new();
        change.put(
            Family::Serials,
            key(n),
            storage::value::encode(1, &n.to_be_bytes()),
        );
        change.event(n.to_be_bytes().to_vec());
        store.commit(change)?;
        writeln!(stdout, "ack {n}")?;
        stdout.flush()?;
    }
    Ok(())
}

/// The key of record `n` (shared with the checker through this formula).
fn key(n: u64) -> Vec<u8> {
    storage::keys::serial(n % 1000, format!("N{n}").as_bytes())
}
