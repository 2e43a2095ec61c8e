//! Writes each target's seed inputs under the directory given (they are
//! committed in `fuzz/seeds`; run `cargo run --bin seeds -- seeds` in
//! `fuzz/` to make them again): valid inputs to mutate from, so the
//! fuzzer starts past the first checks. The consensus target's seeds are
//! onionlb-core's test data, which `scripts/fuzz` copies.

use std::path::Path;

fn write(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("can create the corpus directory");
    std::fs::write(dir.join(name), bytes).expect("can write a seed");
}

fn main() {
    let dir = std::env::args().nth(1).expect("usage: seeds DIR");
    let dir = Path::new(&dir);

    let reply = b"\x07250-version=0.4.9.11\r\n250+md/all=\r\nonion-key\r\n..dot\r\n.\r\n250 OK\r\n650 HS_DESC UPLOADED abc UNKNOWN $5128386E9AA8505DD855A33B7146A708115E14E0~auth0\r\n650+HS_DESC_CONTENT abc x $5128386E9AA8505DD855A33B7146A708115E14E0\r\nhs-descriptor 3\r\n.\r\n650 OK\r\n";
    write(dir, "reply_parser", "replies", reply);

    let config = "status-socket-location: /run/ob.sock\nfetch-interval: 60\ncontrol-timeout: 5\nagents:\n  socket: agents.sock\n  listen: 127.0.0.1:9852\n  heartbeat-timeout: 5\nservices:\n- key: a.key\n  instances:\n  - address: 2gzyxa5ihm7nsggfxnu52rck2vv4rvmdlkiu3zzui5du4xyclen53wid.onion\n    name: web1\n  - address: aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead\n";
    write(dir, "config", "config.yaml", config.as_bytes());

    let agent = format!(
        "HELLO aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead {} {}\nHEALTH UP\nHEALTH DOWN probe failed\nTOR 1234 1700000000\nDESCRIPTOR 5\nabcd\nCHALLENGE {}\nWELCOME\nACCEPTED usable\n",
        "a".repeat(64),
        "b".repeat(128),
        "c".repeat(64)
    );
    write(dir, "agent_channel", "messages", agent.as_bytes());

    for (i, count) in [1u16, 3, 20].into_iter().enumerate() {
        let text = onionlb_fuzz::instance_descriptor(count);
        write(
            dir,
            "instance_descriptor",
            &format!("valid-{i}"),
            text.as_bytes(),
        );
        let fixture = onionlb_fuzz::instance_fixture();
        let blinding =
            onionlb_core::descriptor::Blinding::derive(&fixture.identity, fixture.period)
                .expect("the fixture's period can be blinded for");
        let (middle, inner) = onionlb_core::fuzz_plaintexts(&text, &blinding)
            .expect("the fixture's descriptor decrypts");
        write(
            dir,
            "descriptor_layers",
            &format!("outer-{i}"),
            text.as_bytes(),
        );
        write(
            dir,
            "descriptor_layers",
            &format!("middle-{i}"),
            middle.as_bytes(),
        );
        write(
            dir,
            "descriptor_layers",
            &format!("inner-{i}"),
            inner.as_bytes(),
        );
    }
}
