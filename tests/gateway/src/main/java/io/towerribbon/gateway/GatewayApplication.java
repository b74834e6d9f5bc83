package io.towerribbon.gateway;

import java.util.ArrayList;
import java.util.List;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.cloud.loadbalancer.annotation.LoadBalancerClients;

@SpringBootApplication
// Hint routing when the file sets SCLB's hint keys (see HintsConfiguration);
// otherwise every client keeps SCLB's own configuration.
@LoadBalancerClients(defaultConfiguration = HintsConfiguration.class)
public class GatewayApplication {

    /** {@code --instances=PORT:CONFIG_LOCATION,...}: several gateways in this JVM. */
    private static final String INSTANCES = "--instances=";

    /**
     * One gateway, or with {@code --instances=PORT:CONFIG_LOCATION,...} one application context
     * per entry, each with its own port and {@code spring.config.location} (so its own
     * application file, Eureka client and load balancers). Contexts after the first start in a
     * fraction of the first one's time, which is why the tests run several gateways this way.
     */
    public static void main(String[] args) {
        String instances = null;
        List<String> common = new ArrayList<>();
        for (String arg : args) {
            if (arg.startsWith(INSTANCES)) {
                instances = arg.substring(INSTANCES.length());
            } else {
                common.add(arg);
            }
        }
        if (instances == null) {
            SpringApplication.run(GatewayApplication.class, args);
            return;
        }
        List<ConfigurableApplicationContext> started = new ArrayList<>();
        for (String spec : instances.split(",")) {
            String[] portLocation = spec.split(":", 2);
            if (portLocation.length != 2) {
                throw new IllegalArgumentException("want PORT:CONFIG_LOCATION, got " + spec);
            }
            List<String> own = new ArrayList<>(common);
            own.add("--server.port=" + portLocation[0]);
            own.add("--spring.config.location=" + portLocation[1]);
            try {
                started.add(SpringApplication.run(GatewayApplication.class, own.toArray(new String[0])));
            } catch (RuntimeException e) {
                // One context failed (its port taken meanwhile, say; Spring has logged why).
                // The contexts already started would keep this JVM alive, and its start script
                // waiting, so they are closed and the JVM ends: the script then retries on
                // other ports.
                for (ConfigurableApplicationContext context : started) {
                    context.close();
                }
                System.exit(1);
            }
        }
    }
}
