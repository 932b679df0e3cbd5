import { Alert, Button, Container, Paper, PasswordInput, Stack, Text, TextInput, Title } from "@mantine/core";
import { useForm } from "@mantine/form";
import { useQueryClient } from "@tanstack/react-query";
import { useNavigate, useSearch } from "@tanstack/react-router";
import { useEffect, useRef, useState } from "react";
import { authLogin, authRegister } from "../client/sdk.gen";
import { ApiError, errorMessage, unwrap } from "../lib/api";
import { useClinic } from "../lib/hooks";
import { startSession, takeNotice } from "../lib/session";
import { AnchorLink } from "../components/links";

type Values = { email: string; password: string };

async function signIn(values: Values): Promise<void> {
  const token = await unwrap(authLogin({ body: values }));
  startSession(token.access_token, token.expires_in);
}

function AuthFrame({ title, children }: { title: string; children: React.ReactNode }) {
  const clinic = useClinic();
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · ${clinic.name}`;
  }, [title, clinic.name]);
  return (
    <main id="main">
      <Container size={420} py={60}>
        <Text ta="center" fw={700} size="xl" mb="xs">
          {clinic.name}
        </Text>
        <Title order={1} ta="center" ref={heading} size="h2">
          {title}
        </Title>
        <Paper withBorder shadow="sm" p="lg" mt="lg" radius="md">
          {children}
        </Paper>
      </Container>
    </main>
  );
}

export function SignInPage() {
  const search = useSearch({ strict: false }) as { redirect?: string };
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [notice] = useState(() => takeNotice());
  const [error, setError] = useState<string | null>(null);
  const form = useForm<Values>({
    initialValues: { email: "", password: "" },
    validate: {
      email: (v) => (v.trim() ? null : "Enter your email"),
      password: (v) => (v ? null : "Enter your password"),
    },
  });
  const [busy, setBusy] = useState(false);

  const submit = form.onSubmit(async (values) => {
    setBusy(true);
    setError(null);
    try {
      await signIn({ email: values.email.trim(), password: values.password });
      queryClient.clear();
      await navigate({ to: safeRedirect(search.redirect) });
    } catch (e) {
      setError(
        e instanceof ApiError && e.status === 401
          ? "The email or password is not right."
          : e instanceof ApiError && e.status === 429
            ? "Too many failed attempts. Wait a few minutes, then try again."
            : errorMessage(e),
      );
    } finally {
      setBusy(false);
    }
  });

  return (
    <AuthFrame title="Sign in">
      <form onSubmit={submit} noValidate>
        <Stack>
          {notice ? (
            <Alert color="blue" role="status" title="Signed out">
              {notice}
            </Alert>
          ) : null}
          {error ? (
            <Alert color="red" role="alert" title="Could not sign in">
              {error}
            </Alert>
          ) : null}
          <TextInput label="Email" type="email" autoComplete="username" required {...form.getInputProps("email")} />
          <PasswordInput
            label="Password"
            autoComplete="current-password"
            required
            {...form.getInputProps("password")}
          />
          <Button type="submit" loading={busy} fullWidth>
            Sign in
          </Button>
          <Text size="sm" ta="center">
            New patient?{" "}
            <AnchorLink to="/register">
              Register
            </AnchorLink>
          </Text>
        </Stack>
      </form>
    </AuthFrame>
  );
}

export function RegisterPage() {
  const navigate = useNavigate();
  const queryClient = useQueryClient();
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const form = useForm<Values>({
    initialValues: { email: "", password: "" },
    validate: {
      email: (v) => (/^\S+@\S+\.\S+$/.test(v.trim()) ? null : "Enter an email address such as name@example.com"),
      password: (v) => (v.length >= 10 ? null : "Use at least 10 characters"),
    },
  });

  const submit = form.onSubmit(async (values) => {
    setBusy(true);
    setError(null);
    const body = { email: values.email.trim(), password: values.password };
    try {
      await unwrap(authRegister({ body }));
      await signIn(body);
      queryClient.clear();
      await navigate({ to: "/patients" });
    } catch (e) {
      if (e instanceof ApiError) {
        const fields = e.fieldErrors();
        if (Object.keys(fields).length) form.setErrors(fields);
        else setError(e.status === 409 ? "An account with this email already exists. Sign in instead." : e.message);
      } else setError(errorMessage(e));
    } finally {
      setBusy(false);
    }
  });

  return (
    <AuthFrame title="Register as a patient">
      <form onSubmit={submit} noValidate>
        <Stack>
          {error ? (
            <Alert color="red" role="alert" title="Could not register">
              {error}
            </Alert>
          ) : null}
          <TextInput label="Email" type="email" autoComplete="email" required {...form.getInputProps("email")} />
          <PasswordInput
            label="Password"
            description="At least 10 characters"
            autoComplete="new-password"
            required
            {...form.getInputProps("password")}
          />
          <Button type="submit" loading={busy} fullWidth>
            Register
          </Button>
          <Text size="sm" ta="center">
            Already registered?{" "}
            <AnchorLink to="/sign-in">
              Sign in
            </AnchorLink>
          </Text>
        </Stack>
      </form>
    </AuthFrame>
  );
}

/** Only paths of this portal; never an absolute URL (an open redirect). */
function safeRedirect(target: string | undefined): string {
  return target && target.startsWith("/") && !target.startsWith("//") ? target : "/";
}
