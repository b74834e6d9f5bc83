package io.towerribbon.userapi;

import java.util.ArrayList;
import java.util.List;

import org.springframework.beans.factory.annotation.Value;
import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.http.MediaType;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.RestController;

@SpringBootApplication
@RestController
public class UserApiApplication {

    /** {@code --instances=PORT:HINT,PORT:HINT,...}: several instances in this JVM. */
    private static final String INSTANCES = "--instances=";

    private final String instanceId;

    public UserApiApplication(@Value("${eureka.instance.instance-id}") String instanceId) {
        this.instanceId = instanceId;
    }

    /**
     * One instance, or with {@code --instances=PORT:HINT,...} one application context per
     * entry, each with its own port, Eureka client, instance id and metadata hint. Contexts
     * after the first start in a fraction of the first one's time (classes loaded, code
     * compiled), which is why the tests run their instances this way.
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
            SpringApplication.run(UserApiApplication.class, args);
            return;
        }
        List<ConfigurableApplicationContext> started = new ArrayList<>();
        for (String spec : instances.split(",")) {
            String[] portHint = spec.split(":", 2);
            if (portHint.length != 2) {
                throw new IllegalArgumentException("want PORT:HINT, got " + spec);
            }
            List<String> own = new ArrayList<>(common);
            own.add("--server.port=" + portHint[0]);
            own.add("--eureka.instance.metadata-map.hint=" + portHint[1]);
            try {
                started.add(SpringApplication.run(UserApiApplication.class, own.toArray(new String[0])));
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

    /** Identifies the instance that served the request: its Eureka instance id. */
    @GetMapping(path = "/whoami", produces = MediaType.TEXT_PLAIN_VALUE)
    public String whoami() {
        return instanceId;
    }
}
