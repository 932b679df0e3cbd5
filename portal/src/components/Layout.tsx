// The signed-in frame: header (clinic, person, sign out), the role's navigation, the page.
import { AppShell, Badge, Burger, Button, Group, Stack, Text } from "@mantine/core";
import { useDisclosure } from "@mantine/hooks";
import { useRouterState } from "@tanstack/react-router";
import type { ReactNode } from "react";
import type { UserPublic } from "../client/types.gen";
import { useClinic } from "../lib/hooks";
import { navFor, ROLE_LABEL } from "../lib/nav";
import { endSession } from "../lib/session";
import { NavLinkLink } from "./links";

export function Layout({ me, children }: { me: UserPublic; children: ReactNode }) {
  const [opened, { toggle, close }] = useDisclosure(false);
  const clinic = useClinic();
  const path = useRouterState({ select: (s) => s.location.pathname });
  const items = navFor(me.role);
  const isActive = (to: string) => (to === "/" ? path === "/" : path === to || path.startsWith(to + "/"));

  const link = (item: (typeof items)[number]) => (
    <NavLinkLink key={item.label}
      to={item.to}
      label={item.label}
      active={isActive(item.to)}
      aria-current={isActive(item.to) ? "page" : undefined}
      onClick={close}
      variant="filled"
    />
  );

  return (
    <AppShell
      header={{ height: 60 }}
      navbar={{ width: 220, breakpoint: "sm", collapsed: { mobile: !opened } }}
      padding="md"
    >
      <a href="#main" className="skip-link">
        Skip to main content
      </a>
      <AppShell.Header>
        <Group h="100%" px="md" justify="space-between" wrap="nowrap">
          <Group gap="sm" wrap="nowrap">
            <Burger
              opened={opened}
              onClick={toggle}
              hiddenFrom="sm"
              size="sm"
              aria-label={opened ? "Close navigation" : "Open navigation"}
              aria-expanded={opened}
              aria-controls="main-navigation"
            />
            <Text fw={700} size="lg" component="span">
              {clinic.name}
            </Text>
          </Group>
          <Group gap="sm" wrap="nowrap">
            <Stack gap={0} visibleFrom="xs" align="flex-end">
              <Text size="sm" component="span">
                {me.email}
              </Text>
            </Stack>
            <Badge variant="outline" color="dark">
              {ROLE_LABEL[me.role]}
            </Badge>
            <Button variant="default" size="xs" onClick={() => endSession("You have signed out.")}>
              Sign out
            </Button>
          </Group>
        </Group>
      </AppShell.Header>
      <AppShell.Navbar p="xs" id="main-navigation" aria-label="Main navigation">
        <Stack gap={2}>
            {items.filter((i) => !i.group).map(link)}
            {items.some((i) => i.group) ? (
              <Text size="xs" fw={700} tt="uppercase" mt="md" mb={4} px="sm" component="h2" className="nav-group">
                Admin
              </Text>
            ) : null}
            {items.filter((i) => i.group).map(link)}
        </Stack>
      </AppShell.Navbar>
      <AppShell.Main id="main" tabIndex={-1}>
        {children}
      </AppShell.Main>
    </AppShell>
  );
}
