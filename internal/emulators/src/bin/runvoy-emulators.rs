//! Starts the Firestore emulator by hand (`make emulators`) and keeps it up until interrupted.

use std::io::Write;

fn main() {
    let emu = match runvoy_emulators::Emulator::firestore() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("runvoy-emulators: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "Firestore emulator up (output in {})",
        emu.log_path().display()
    );
    println!("export FIRESTORE_EMULATOR_HOST={}", emu.host);
    println!("Press Ctrl-C to stop it.");
    let _ = std::io::stdout().flush();
    // Ctrl-C ends this process; the emulator's group dies with it (see `Emulator`).
    loop {
        std::thread::park();
    }
}
