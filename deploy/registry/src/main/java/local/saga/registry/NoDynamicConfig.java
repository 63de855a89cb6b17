package local.saga.registry;

import io.apicurio.common.apps.config.DynamicConfigPropertyList;
import javax.enterprise.inject.Produces;
import javax.inject.Singleton;
import java.util.List;

/**
 * The registry's list of settings an admin may change at run time, empty.
 *
 * <p>Apicurio builds this list at build time with a Quarkus extension
 * (apicurio-common-app-components-config-index) whose deployment module Maven Central does not
 * serve, so pom.xml leaves the extension out and this producer stands in for the bean it made.
 * The local stack changes no registry setting at run time, so the empty list is what it needs.
 */
public class NoDynamicConfig {

    @Produces
    @Singleton
    DynamicConfigPropertyList dynamicConfigProperties() {
        return new DynamicConfigPropertyList(List.of());
    }
}
