package io.towerribbon.gateway;

import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.cloud.loadbalancer.core.ServiceInstanceListSupplier;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;

/**
 * {@code spring.cloud.loadbalancer.configurations: hints}.
 *
 * <p>Spring Cloud LoadBalancer 4.3 ships {@code HintBasedServiceInstanceListSupplier} but no
 * {@code configurations} value that selects it: its reference documentation enables hint-based
 * routing with {@code ServiceInstanceListSupplier.builder().withDiscoveryClient().withCaching()
 * .withHints()} in a load-balancer client configuration. This class is that configuration,
 * applied to every client when {@code configurations} is {@code hints}, so that a gateway (and
 * tower-ribbon) can turn hint routing on from {@code application.yml} alone. Any other value
 * leaves SCLB's own {@code LoadBalancerClientConfiguration} in charge, unchanged.
 *
 * <p>The hint comes from the request header named by {@code spring.cloud.loadbalancer.hint-header-name}
 * (default {@code X-SC-LB-Hint}), else from {@code spring.cloud.loadbalancer.hint.<serviceId>} or
 * {@code hint.default}; instances whose metadata {@code hint} equals it are kept, and when none
 * does, every instance is.
 *
 * <p>Not annotated {@code @Configuration}: it is registered per client by
 * {@code @LoadBalancerClients(defaultConfiguration = ...)} and must stay out of component scanning.
 */
public class HintsConfiguration {

    @Bean
    @ConditionalOnProperty(value = "spring.cloud.loadbalancer.configurations", havingValue = "hints")
    ServiceInstanceListSupplier hintsServiceInstanceListSupplier(ConfigurableApplicationContext context) {
        return ServiceInstanceListSupplier.builder()
                .withDiscoveryClient()
                .withCaching()
                .withHints()
                .build(context);
    }
}
