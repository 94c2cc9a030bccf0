//! Runs the Rust reference thin client (crates.io `katzenpost_thin_client`,
//! pinned in Cargo.toml) against the kpclientd emulator: a keypair, a write,
//! a read, a no-retry miss and a copy, each checked. Prints one line per
//! check and closes with "N passed, M failed"; exits non-zero on any failure.
//!
//! Usage: reference-rust [ADDRESS]   (default 127.0.0.1:64331; a path = Unix socket)

use std::future::Future;
use std::time::Duration;

use katzenpost_thin_client::{Config, ThinClient, ThinClientError};
use rand::RngCore;

/// No call of the thin client has a timeout of its own; a hung daemon must fail the run, not stall it.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);

async fn timed<T, F>(what: &str, f: F) -> Result<T, String>
where
    F: Future<Output = Result<T, ThinClientError>>,
{
    match tokio::time::timeout(STEP_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e:?}")),
        Err(_) => Err(format!("{what}: no answer within {} s", STEP_TIMEOUT.as_secs())),
    }
}

fn seed() -> [u8; 32] {
    let mut s = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut s);
    s
}

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn check(&mut self, name: &str, result: Result<(), String>) -> bool {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("  ok   {name}");
                true
            }
            Err(e) => {
                self.failed += 1;
                println!("  FAIL {name}: {e}");
                false
            }
        }
    }
}

fn expect(cond: bool, msg: impl Into<String>) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg.into()) }
}

fn config_for(address: &str) -> Result<Config, String> {
    let section = if address.contains('/') || address.starts_with('@') { "Unix" } else { "Tcp" };
    let toml = format!("[Dial]\n  [Dial.{section}]\n    Address = \"{address}\"\n");
    let path = std::env::temp_dir().join(format!("kp-reference-rust-{}.toml", std::process::id()));
    std::fs::write(&path, toml).map_err(|e| format!("writing {}: {e}", path.display()))?;
    let cfg = Config::new(path.to_str().unwrap()).map_err(|e| format!("config: {e}"));
    let _ = std::fs::remove_file(&path);
    cfg
}

async fn connect(address: &str) -> Result<std::sync::Arc<ThinClient>, String> {
    let cfg = config_for(address)?;
    let client = ThinClient::new(cfg).await.map_err(|e| format!("connect to {address}: {e}"))?;
    // The handshake (connection status, PKI document) is read by the client's worker task.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.pki_document().await.is_err() || !client.is_connected() {
        if tokio::time::Instant::now() > deadline {
            return Err("no PKI document or no mixnet connection within 30 s".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(client)
}

async fn run(address: &str, t: &mut Tally) {
    let client = match connect(address).await {
        Ok(c) => c,
        Err(e) => {
            t.check("connect and receive the PKI document", Err(e));
            return;
        }
    };
    let geometry_ok = client.pigeonhole_geometry().max_plaintext_payload_length == 1553
        && client.sphinx_geometry().user_forward_payload_length == 2000;
    t.check(
        "connect and receive the PKI document and geometry",
        expect(geometry_ok, "unexpected geometry"),
    );

    // 1. keypair
    let kp = match timed("new_keypair", client.new_keypair(&seed())).await {
        Ok(kp) => kp,
        Err(e) => {
            t.check("new_keypair", Err(e));
            client.stop().await;
            return;
        }
    };
    let counter = timed("get_message_box_index_counter", client.get_message_box_index_counter(&kp.first_message_index)).await;
    t.check(
        "new_keypair: 168-byte write cap, 136-byte read cap (its suffix), 104-byte index",
        expect(
            kp.write_cap.len() == 168
                && kp.read_cap.len() == 136
                && kp.first_message_index.len() == 104
                && kp.write_cap[32..] == kp.read_cap[..],
            format!("sizes {} / {} / {}", kp.write_cap.len(), kp.read_cap.len(), kp.first_message_index.len()),
        )
        .and(counter.map(|_| ())),
    );

    // 2. write
    let message = b"hello from the rust reference client".to_vec();
    let write = async {
        let ew = timed("encrypt_write", client.encrypt_write(&message, &kp.write_cap, &kp.first_message_index)).await?;
        let r = timed(
            "start_resending_encrypted_message (write)",
            client.start_resending_encrypted_message(
                None,
                Some(&kp.write_cap),
                None,
                None,
                &ew.envelope_descriptor,
                &ew.message_ciphertext,
                &ew.envelope_hash,
            ),
        )
        .await?;
        expect(r.plaintext.is_empty(), "a write returned a plaintext")?;
        expect(
            r.courier_identity_hash.as_ref().map(|h| h.len()) == Some(32),
            "no 32-byte courier identity hash in the write's reply",
        )
    };
    let wrote = t.check("encrypt_write + start_resending_encrypted_message writes a box", write.await);

    // 3. read
    let read = async {
        expect(wrote, "skipped: the write failed")?;
        let er = timed("encrypt_read", client.encrypt_read(&kp.read_cap, &kp.first_message_index)).await?;
        let r = timed(
            "start_resending_encrypted_message (read)",
            client.start_resending_encrypted_message(
                Some(&kp.read_cap),
                None,
                Some(&kp.first_message_index),
                Some(0),
                &er.envelope_descriptor,
                &er.message_ciphertext,
                &er.envelope_hash,
            ),
        )
        .await?;
        expect(r.plaintext == message, format!("read back {:?}", String::from_utf8_lossy(&r.plaintext)))
    };
    t.check("encrypt_read + start_resending_encrypted_message reads it back", read.await);

    // 4. no-retry miss
    let miss = async {
        let next = timed("next_message_box_index", client.next_message_box_index(&kp.first_message_index)).await?;
        let er = timed("encrypt_read", client.encrypt_read(&kp.read_cap, &next)).await?;
        let r = tokio::time::timeout(
            STEP_TIMEOUT,
            client.start_resending_encrypted_message_no_retry(
                Some(&kp.read_cap),
                None,
                Some(&next),
                Some(0),
                &er.envelope_descriptor,
                &er.message_ciphertext,
                &er.envelope_hash,
            ),
        )
        .await
        .map_err(|_| "no-retry read: no answer".to_string())?;
        match r {
            Err(ThinClientError::BoxNotFound) => Ok(()),
            Err(e) => Err(format!("expected BoxNotFound, got {e:?}")),
            Ok(v) => Err(format!("expected BoxNotFound, got a plaintext of {} bytes", v.plaintext.len())),
        }
    };
    t.check("start_resending_encrypted_message_no_retry on an unwritten box: BoxNotFound", miss.await);

    // 5. copy: 3000 bytes (two boxes) through a temp stream and a copy command
    let copy = async {
        let dest = timed("new_keypair (dest)", client.new_keypair(&seed())).await?;
        let temp = timed("new_keypair (temp)", client.new_keypair(&seed())).await?;
        let mut payload = vec![0u8; 3000];
        rand::thread_rng().fill_bytes(&mut payload);
        let env = timed(
            "create_courier_envelopes_from_payload",
            client.create_courier_envelopes_from_payload(&payload, &dest.write_cap, &dest.first_message_index, true, true),
        )
        .await?;
        expect(!env.envelopes.is_empty(), "no copy stream elements")?;
        let mut idx = temp.first_message_index.clone();
        for el in &env.envelopes {
            let ew = timed("encrypt_write (temp)", client.encrypt_write(el, &temp.write_cap, &idx)).await?;
            timed(
                "start_resending_encrypted_message (temp)",
                client.start_resending_encrypted_message(
                    None,
                    Some(&temp.write_cap),
                    None,
                    None,
                    &ew.envelope_descriptor,
                    &ew.message_ciphertext,
                    &ew.envelope_hash,
                ),
            )
            .await?;
            idx = timed("next_message_box_index", client.next_message_box_index(&idx)).await?;
        }
        let (courier, queue) = timed("get_courier_destination", client.get_courier_destination()).await?;
        timed(
            "start_resending_copy_command",
            client.start_resending_copy_command(&temp.write_cap, Some(&courier), Some(&queue)),
        )
        .await?;
        let mut got = Vec::new();
        let mut idx = dest.first_message_index.clone();
        for _ in 0..2 {
            let er = timed("encrypt_read (dest)", client.encrypt_read(&dest.read_cap, &idx)).await?;
            let r = timed(
                "start_resending_encrypted_message (dest read)",
                client.start_resending_encrypted_message(
                    Some(&dest.read_cap),
                    None,
                    Some(&idx),
                    Some(0),
                    &er.envelope_descriptor,
                    &er.message_ciphertext,
                    &er.envelope_hash,
                ),
            )
            .await?;
            got.extend_from_slice(&r.plaintext);
            idx = timed("next_message_box_index", client.next_message_box_index(&idx)).await?;
        }
        expect(got == payload, format!("copied {} bytes, read back {} different bytes", payload.len(), got.len()))
    };
    t.check("copy: 3000 bytes through a temp stream and start_resending_copy_command", copy.await);

    client.stop().await;
}

#[tokio::main]
async fn main() {
    let address = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:64331".to_string());
    println!("Rust reference thin client (katzenpost_thin_client 0.0.15) against {address}");
    let mut t = Tally { passed: 0, failed: 0 };
    run(&address, &mut t).await;
    println!("{} passed, {} failed", t.passed, t.failed);
    std::process::exit(if t.failed == 0 && t.passed > 0 { 0 } else { 1 });
}
