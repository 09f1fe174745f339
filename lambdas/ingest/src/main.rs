fn main() {
    println!("ingest");
}
