//! (being written)

/// `idagent pause`: the holder's process.
pub fn pause() -> ! {
    loop {
        std::thread::park();
    }
}
