package io.towerribbon.gateway;

import java.util.Map;

import org.springframework.boot.autoconfigure.condition.ConditionOutcome;
import org.springframework.boot.autoconfigure.condition.SpringBootCondition;
import org.springframework.boot.context.properties.bind.Bindable;
import org.springframework.boot.context.properties.bind.Binder;
import org.springframework.cloud.loadbalancer.core.ServiceInstanceListSupplier;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.ConditionContext;
import org.springframework.context.annotation.Conditional;
import org.springframework.core.type.AnnotatedTypeMetadata;

/**
 * Hint-based routing for every load-balanced client, turned on by the application file.
 *
 * <p>Spring Cloud LoadBalancer 4.3 ships {@code HintBasedServiceInstanceListSupplier} but no
 * {@code spring.cloud.loadbalancer.configurations} value that selects it: its reference
 * documentation enables hint routing from Java, with {@code ServiceInstanceListSupplier.builder()
 * .withDiscoveryClient().withCaching().withHints()} in a load-balancer client configuration, and
 * leaves {@code hint-header-name} and {@code hint.*} to the application file. This class is that
 * configuration, applied when the file sets one of those hint keys and leaves
 * {@code configurations} unset (or {@code default}), which is also when tower-ribbon's config
 * module turns hint routing on: one file, read alike by both. Otherwise SCLB's own
 * {@code LoadBalancerClientConfiguration} stays in charge, unchanged.
 *
 * <p>The hint comes from the request header named by {@code hint-header-name} (default
 * {@code X-SC-LB-Hint}) when it has text, else from {@code hint.<serviceId>}, else
 * {@code hint.default}; instances whose metadata {@code hint} equals it are kept, and when none
 * does, every instance is.
 *
 * <p>Not annotated {@code @Configuration}: it is registered per client by
 * {@code @LoadBalancerClients(defaultConfiguration = ...)} and must stay out of component scanning.
 */
public class HintsConfiguration {

    @Bean
    @Conditional(HintKeysSet.class)
    ServiceInstanceListSupplier hintsServiceInstanceListSupplier(ConfigurableApplicationContext context) {
        return ServiceInstanceListSupplier.builder()
                .withDiscoveryClient()
                .withCaching()
                .withHints()
                .build(context);
    }

    /** {@code hint-header-name} or a {@code hint.*} key set, {@code configurations} default. */
    static class HintKeysSet extends SpringBootCondition {

        private static final String PREFIX = "spring.cloud.loadbalancer.";

        @Override
        public ConditionOutcome getMatchOutcome(ConditionContext context, AnnotatedTypeMetadata metadata) {
            Binder binder = Binder.get(context.getEnvironment());
            String configurations =
                    binder.bind(PREFIX + "configurations", String.class).orElse("default");
            if (!"default".equals(configurations)) {
                return ConditionOutcome.noMatch("configurations is " + configurations);
            }
            boolean header = binder.bind(PREFIX + "hint-header-name", String.class).isBound();
            boolean hints = !binder.bind(PREFIX + "hint", Bindable.mapOf(String.class, String.class))
                    .orElse(Map.of())
                    .isEmpty();
            return header || hints
                    ? ConditionOutcome.match("hint keys set")
                    : ConditionOutcome.noMatch("no hint-header-name or hint.* key");
        }
    }
}
