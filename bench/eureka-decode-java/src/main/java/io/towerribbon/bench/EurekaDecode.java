package io.towerribbon.bench;

import com.netflix.discovery.converters.wrappers.CodecWrappers;
import com.netflix.discovery.converters.wrappers.DecoderWrapper;
import com.netflix.discovery.shared.Application;
import com.netflix.discovery.shared.Applications;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.MemoryPoolMXBean;
import java.lang.management.MemoryType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;

/**
 * Decodes a {@code GET /eureka/apps} body with eureka-client's own JSON
 * codec ({@code CodecWrappers.JacksonJson}, i.e. {@code EurekaJacksonCodec},
 * as the client's transports do), warmed, and prints one line:
 *
 * <pre>java instances=N body_mb=X warmup=W runs=K median_ms=M min_ms=M
 *   rss_peak_mb=R heap_peak_mb=H heap_retained_mb=T</pre>
 *
 * rss_peak_mb: VmHWM growth from /proc/self/status over the whole run
 * (baseline after the body is read and a GC); heap_peak_mb: peak used heap
 * (all heap pools) minus used heap after GC at the baseline; heap_retained_mb:
 * used heap after GC with one decoded {@code Applications} alive, minus the
 * baseline.
 *
 * Warm-up: at least WARMUP decodes and at least WARMUP_SECS seconds of them,
 * so small bodies get the JIT's compiled code too.
 *
 * usage: java -jar eureka-decode-java.jar FILE [WARMUP=20] [RUNS=15] [WARMUP_SECS=3]
 */
public final class EurekaDecode {
    private EurekaDecode() {}

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: EurekaDecode FILE [WARMUP] [RUNS]");
            System.exit(2);
        }
        int warmup = args.length > 1 ? Integer.parseInt(args[1]) : 20;
        int runs = args.length > 2 ? Integer.parseInt(args[2]) : 15;
        double warmupSecs = args.length > 3 ? Double.parseDouble(args[3]) : 3.0;
        DecoderWrapper codec = CodecWrappers.getDecoder(CodecWrappers.JacksonJson.class);
        if (codec == null) {
            throw new IllegalStateException("no JacksonJson codec");
        }

        byte[] body = Files.readAllBytes(Path.of(args[0]));
        List<MemoryPoolMXBean> heap = ManagementFactory.getMemoryPoolMXBeans().stream()
                .filter(p -> p.getType() == MemoryType.HEAP).toList();
        long baseHeap = usedAfterGc();
        long baseRss = vmHwmKb();
        heap.forEach(MemoryPoolMXBean::resetPeakUsage);

        // One decode alive: retained size and a sanity count.
        Applications kept = decode(codec, body);
        int instances = count(kept);
        long retained = usedAfterGc() - baseHeap;
        kept = null;

        long warmStart = System.nanoTime();
        int warmed = 0;
        while (warmed < warmup || (System.nanoTime() - warmStart) / 1e9 < warmupSecs) {
            sink ^= count(decode(codec, body));
            warmed++;
        }
        double[] ms = new double[runs];
        for (int i = 0; i < runs; i++) {
            long t0 = System.nanoTime();
            Applications apps = decode(codec, body);
            ms[i] = (System.nanoTime() - t0) / 1e6;
            sink ^= count(apps);
        }
        long peakHeap = heap.stream().mapToLong(p -> p.getPeakUsage().getUsed()).sum() - baseHeap;
        long rss = vmHwmKb() - baseRss;
        Arrays.sort(ms);
        double median = runs % 2 == 1 ? ms[runs / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2;
        System.out.printf(
                "java instances=%d body_mb=%.2f warmup=%d runs=%d median_ms=%.2f min_ms=%.2f"
                        + " rss_peak_mb=%.1f heap_peak_mb=%.1f heap_retained_mb=%.1f sink=%d%n",
                instances, body.length / 1e6, warmed, runs, median, ms[0],
                rss / 1024.0, peakHeap / 1048576.0, retained / 1048576.0, sink);
    }

    private static int sink;

    private static Applications decode(DecoderWrapper codec, byte[] body) throws IOException {
        return codec.decode(new ByteArrayInputStream(body), Applications.class);
    }

    private static int count(Applications apps) {
        int n = 0;
        for (Application app : apps.getRegisteredApplications()) {
            n += app.getInstancesAsIsFromEureka().size();
        }
        return n;
    }

    private static long usedAfterGc() {
        for (int i = 0; i < 3; i++) {
            System.gc();
        }
        Runtime rt = Runtime.getRuntime();
        return rt.totalMemory() - rt.freeMemory();
    }

    private static long vmHwmKb() throws IOException {
        for (String line : Files.readAllLines(Path.of("/proc/self/status"))) {
            if (line.startsWith("VmHWM:")) {
                return Long.parseLong(line.replaceAll("[^0-9]", ""));
            }
        }
        return -1;
    }
}
