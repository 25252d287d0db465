//! Starts Google's Firestore and Pub/Sub emulators by hand (`make emulators`, `make
//! run-gcp-local`) and keeps them up until interrupted. Prints one `export` line per emulator,
//! then `ready`.

use std::io::Write;

fn main() {
    let started = runvoy_emulators::Emulator::firestore()
        .and_then(|f| Ok((f, runvoy_emulators::Emulator::pubsub()?)));
    let (firestore, pubsub) = match started {
        Ok(e) => e,
        Err(e) => {
            eprintln!("runvoy-emulators: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "# Firestore emulator up (output in {})",
        firestore.log_path().display()
    );
    println!("export FIRESTORE_EMULATOR_HOST={}", firestore.host);
    println!(
        "# Pub/Sub emulator up (output in {})",
        pubsub.log_path().display()
    );
    println!("export PUBSUB_EMULATOR_HOST={}", pubsub.host);
    println!("# ready; press Ctrl-C to stop them.");
    let _ = std::io::stdout().flush();
    // Ctrl-C ends this process; the emulators' groups die with it (see `Emulator`).
    loop {
        std::thread::park();
    }
}
