fn main() {
    println!("compact");
}
