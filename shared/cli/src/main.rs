fn main() {
    println!("dmarc-tsv");
}
