fn main() {
    eprintln!("fjord-jepsen: not wired yet");
    std::process::exit(2);
}
