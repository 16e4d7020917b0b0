// gzip of real exported requests with Go's compress/gzip: what grpc-go's gzip compressor
// (encoding/gzip, level gzip.DefaultCompression = 6), and so the Collector's otlp exporter,
// does to each request. The same capture, output and timing as
// benches/examples/gzip_capture.rs, for a side-by-side run:
//
//	go run benches/peer/gzip_go.go FILE [LEVELS [ROUNDS]]   # e.g. CAPTURE 6 3
//
// FILE: a `file` exporter capture (`format: proto`: 4-byte big-endian length, then a request).
package main

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: gzip_go FILE [LEVELS [ROUNDS]]")
		os.Exit(2)
	}
	data, err := os.ReadFile(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	levels, rounds := "6", 3
	if len(os.Args) > 2 {
		levels = os.Args[2]
	}
	if len(os.Args) > 3 {
		rounds, _ = strconv.Atoi(os.Args[3])
	}
	var requests [][]byte
	total := 0
	for rest := data; len(rest) >= 4; {
		n := int(binary.BigEndian.Uint32(rest))
		requests = append(requests, rest[4:4+n])
		total += n
		rest = rest[4+n:]
	}
	fmt.Printf("%d requests, %d B\n", len(requests), total)
	for r := 0; r < rounds; r++ {
		for _, l := range strings.Split(levels, ",") {
			level, _ := strconv.Atoi(l)
			start := time.Now()
			out := 0
			for _, req := range requests {
				var b bytes.Buffer
				w, _ := gzip.NewWriterLevel(&b, level)
				w.Write(req)
				w.Close()
				out += b.Len()
			}
			elapsed := time.Since(start).Seconds()
			fmt.Printf("Go compress/gzip level %d: %d B (%.4f of the input), %.1f ms\n",
				level, out, float64(out)/float64(total), elapsed*1e3)
		}
	}
}
